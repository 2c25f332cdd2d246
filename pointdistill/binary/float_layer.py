"""A float point layer, its BatchNorm and its activation, fused for CPU training.

The float point layers of PointNet (all of the teacher's but the pooled one, and a binary
student's first layer, on the coordinates) are h = act(BN(x @ W^T)) over the M = B * N points,
act a ReLU or a Hardtanh. Autograd makes about six passes over [M, C] besides the matmuls: the
BatchNorm statistics and normalisation, the activation, and back the activation's mask and
BatchNorm's backward. The fused layer makes two each way (``_point_kernels.c``):

* forward: y = x @ W^T (torch's matmul); one pass for the batch statistics (per-channel sums of
  y - y[0] and their squares in float64: the shift keeps the variance from cancelling); one for
  h = clamp(z, lo, hi), z = A (y - mean) + beta with A = gamma / sqrt(var + eps).
* backward: one pass for BatchNorm's two per-channel sums of the passed gradient g [lo < z < hi]
  (times y - mean), then d y = E1 g [lo < z < hi] + E2 + E3 (y - mean) and the input and weight
  gradients d y @ W and d y^T @ x: on AVX2 / AVX-512 in one pass, tile by tile, d y never written
  out (as in point_layer); on the generic path d y is written and torch multiplies.

Exact against the autograd path within float32 rounding (tests/binary/test_float_layer.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from pointdistill.binary.popcount import (
    float32_array, fuses_backward_products, kernels, path_code, resolve_path, threads_for, update_running_stats,
)

_NO_COEF = np.empty(0, np.float32)


def activation_bounds(module: nn.Module) -> tuple[float, float] | None:
    """(lo, hi) of a ReLU (0, inf) or Hardtanh (min_val, max_val) module: h = clamp(z, lo, hi) and
    the gradient passes where lo < z < hi, as torch's backward does. None for anything else."""
    if type(module) is nn.ReLU:
        return 0.0, math.inf
    if type(module) is nn.Hardtanh:
        return float(module.min_val), float(module.max_val)
    return None


class _FloatPointLayer(torch.autograd.Function):
    """h[b, n] = clamp(BN(x[b, n] @ weight^T), lo, hi) for a training-mode BatchNorm."""

    @staticmethod
    def forward(ctx, x, weight, gamma, beta, bn, bounds, path):
        batch, points, k = x.shape
        channels, m = weight.shape[0], batch * points
        code, threads = path_code(path), threads_for(m)
        rows = x.detach().reshape(m, k).contiguous()
        w = weight.detach().contiguous()
        y = (rows @ w.T).numpy()  # [M, C]
        shift = y[0].copy()
        sums = np.empty((2, channels), np.float64)
        kernels().float_moments(y, shift, m, channels, sums, code, threads)
        moments = torch.from_numpy(sums) / m
        mean = torch.from_numpy(shift).double() + moments[0]
        var = (moments[1] - moments[0] ** 2).clamp_min(0)
        invstd = (var + bn.eps).rsqrt()
        coef = (float32_array(gamma.detach().double() * invstd), float32_array(mean), float32_array(beta.detach()))
        h = np.empty((m, channels), np.float32)
        kernels().float_forward(y, *coef, *bounds, m, channels, h, code, threads)
        update_running_stats(bn, mean, var, m)
        ctx.tensors = (rows, w, y, coef, invstd, gamma.detach().double())
        ctx.sizes, ctx.bounds, ctx.code = (batch, points, k, channels, m), bounds, code
        return torch.from_numpy(h).view(batch, points, channels)

    @staticmethod
    def backward(ctx, grad):
        rows, w, y, coef, invstd, gamma = ctx.tensors
        batch, points, k, channels, m = ctx.sizes
        code, threads = ctx.code, threads_for(m)
        g = np.ascontiguousarray(grad.numpy()).reshape(m, channels)
        sums = np.empty((2, channels), np.float64)
        kernels().float_backward(g, y, *coef, _NO_COEF, _NO_COEF, _NO_COEF, *ctx.bounds, m, channels, sums, code, threads)
        passed, passed_centred = torch.from_numpy(sums)  # sum g [lo < z < hi], times (y - mean): [C] each
        dbeta, dgamma = passed, invstd * passed_centred  # xhat = (y - mean) invstd
        e1 = gamma * invstd  # d y = e1 (g' - dbeta / m - xhat dgamma / m)
        e = (float32_array(e1), float32_array(-e1 * dbeta / m), float32_array(-e1 * invstd * dgamma / m))
        want_x = ctx.needs_input_grad[0]
        if fuses_backward_products(code):
            grad_x = np.empty((m, k) if want_x else 0, np.float32)
            grad_w = np.empty((channels, k), np.float32)
            kernels().float_backward_fused(g, y, *coef, *e, *ctx.bounds, rows.numpy(), w.numpy(), m, channels, k,
                                           grad_x, grad_w, code, threads)
            grad_x, grad_w = torch.from_numpy(grad_x), torch.from_numpy(grad_w)
        else:
            grad_y = np.empty((m, channels), np.float32)
            kernels().float_backward(g, y, *coef, *e, *ctx.bounds, m, channels, grad_y, code, threads)
            grad_y = torch.from_numpy(grad_y)
            grad_x, grad_w = (grad_y @ w if want_x else None), grad_y.T @ rows
        grad_x = grad_x.view(batch, points, k) if want_x else None
        return grad_x, grad_w, dgamma.float(), dbeta.float(), None, None, None


def float_point_layer(x: torch.Tensor, weight: torch.Tensor, bn: nn.BatchNorm1d,
                      bounds: tuple[float, float]) -> torch.Tensor:
    """clamp(bn(x @ weight^T), *bounds) for a BatchNorm in training mode.

    x: float32 [B, N, K]; weight: float32 [C, K] (a kernel-1 Conv1d's weight[:, :, 0], no bias);
    bn: BatchNorm1d(C), whose running statistics are updated as in its forward; bounds: (lo, hi)
    of the activation (activation_bounds). Returns float32 [B, N, C].
    """
    return _FloatPointLayer.apply(x, weight, bn.weight, bn.bias, bn, bounds, resolve_path())
