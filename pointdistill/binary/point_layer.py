"""A binary point layer, its BatchNorm and its Hardtanh, fused for CPU training.

Between the float stem and the pooled layer, BiPointNet's trunk is a chain of
h = hardtanh(BN(scale * a @ w^T)) over the B * N points, a and w +-1 patterns times magnitudes
(a = sign(x) s_b per cloud, w = +-r_c per channel). The autograd path runs a float matmul and
about ten elementwise passes over [B * N, C] forward and back. The fused layer takes x itself,
whose signs are the pattern: under the clipped straight-through estimator, x being the previous
Hardtanh's output (|x| <= 1), the pattern's gradient passes to x unchanged, so neither the +-1
tensor nor the straight-through mask is formed (another estimator, ApproxSign or EDE, the caller applies
to x in its backward: Quantizer.hardtanh_pattern_source). Here the product is the popcount p of
the sign bits (``_point_kernels.c``, kept as bytes), and everything after it is affine in p per
(cloud, channel):

* r = s_b r_c (K - 2 p); BatchNorm's batch statistics of r come from the exact Gram matrix of
  the input signs (as in point_pool), so z = BN(scale * r) = A[b, c] (p - D[b, c]) + beta_c
  (D the popcount at the mean) and h = clamp(z, -1, 1): one pass that reads bytes, writes h.
* Backward: Hardtanh passes where -1 < z < 1; BatchNorm's backward needs per channel the sum
  of the passed gradient and of the passed gradient times p (one pass), then
  d r = E1[c] g [-1 < z < 1] + E2[b, c] + E3[b, c] p, and the input and weight gradients
  d r @ w and d r^T @ a. On AVX2 / AVX-512 one pass takes all three tile by tile (32 points of
  a cloud): d r of the tile stays in the L1 cache, a is rebuilt from the sign bits per tile, and
  neither the [B, N, C] d r nor the float [B, N, K] activation is written out. The generic path
  writes d r and leaves the two products to torch's matmuls.

Exact against the autograd path within float32 rounding (tests/binary/test_point_layer.py).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pointdistill.binary.popcount import (
    BinaryProduct, float32_array, fuses_backward_products, kernels, magnitudes_or_ones, product_moments, resolve_path,
    sign_moments, threads_for, update_running_stats,
)


class _PointLayer(torch.autograd.Function):
    """h[b, n, c] = hardtanh(BN(scale * s_b sign(x[b, n]) . weight[c])) for a training-mode BatchNorm."""

    @staticmethod
    def forward(ctx, x, weight, scale, gamma, beta, bn, magnitudes, path):
        batch, points, k = x.shape
        channels, m = weight.shape[0], batch * points
        s = float(scale) if scale is not None else 1.0
        product = BinaryProduct(x, weight, path)
        a_scale, w_scale = magnitudes_or_ones(magnitudes, batch, channels)
        _, a_sum, gram = sign_moments(product, a_scale)
        r_mean, r_var = product_moments(weight.detach(), a_sum, gram, m)
        mean, var = s * r_mean, s * s * r_var
        invstd = (var + bn.eps).rsqrt()
        slope = gamma.detach().double() * invstd  # d z / d (scale r), [C]
        u = a_scale[:, None] * w_scale[None, :]  # r = u (K - 2 p), [B, C]
        # z = A (p - D) + B with D the popcount at the mean: exact (beta) for a point at the mean
        step = s * u  # scale r = step (K - 2 p)
        coef = (float32_array(-2 * step * slope),
                float32_array(torch.where(step == 0, 0.0, (k - mean / step) / 2)),
                float32_array(torch.zeros_like(u) + beta.detach().double()))
        h = np.empty((batch, points, channels), np.float32)
        kernels().layer_forward(product.p, *coef, 0, batch, batch, points, product.padded, channels, h, product.path,
                                threads_for(batch))
        update_running_stats(bn, mean, var, m)
        ctx.product, ctx.coef, ctx.a_scale = product, coef, magnitudes[0]
        ctx.stats = (s, m, u, slope, invstd, mean)
        ctx.save_for_backward(weight)
        return torch.from_numpy(h)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        product, coef = ctx.product, ctx.coef
        s, m, u, slope, invstd, mean = ctx.stats
        batch, points, k = product.batch, product.points, product.k
        channels = weight.shape[0]
        g = np.ascontiguousarray(grad.numpy())
        no_coef = np.empty(0, np.float32)
        sums = np.empty((batch, 2, channels), np.float64)
        kernels().layer_backward(g, product.p, *coef, no_coef, no_coef, no_coef, 0, batch, batch, points,
                                 product.padded, channels, sums, product.path, threads_for(batch))
        passed, passed_p = torch.from_numpy(sums).unbind(1)  # sum_n g [-1 < z < 1] (times p), [B, C]
        # xhat = (scale r - mean) invstd = x_a p + x_b per (cloud, channel)
        x_a, x_b = -2 * s * u * invstd, (s * u * k - mean) * invstd
        dbeta = passed.sum(0)
        dgamma = (x_a * passed_p + x_b * passed).sum(0)
        e1 = s * slope  # d r = scale * slope * (g - dbeta / m - xhat * dgamma / m)
        e2 = e1 * (-dbeta / m - x_b * dgamma / m)
        e3 = e1 * (-x_a * dgamma / m)
        e = (float32_array(e1), float32_array(e2), float32_array(e3))
        if fuses_backward_products(product.path):
            grad_a, grad_weight = _products_fused(g, product, coef, e, weight, ctx.a_scale)
        else:
            grad_a, grad_weight = _products_unfused(g, product, coef, e, weight, ctx.a_scale)
        return grad_a, grad_weight, None, dgamma.float(), dbeta.float(), None, None, None


def _products_fused(g, product, coef, e, weight, a_scale):
    """d activation [B, N, K] and d weight [C, K] taken tile by tile in the kernel (AVX2 / AVX-512):
    d r is never written out (d x = d activation * s_b is the caller's: the pattern passes it on)."""
    batch, points, k = product.batch, product.points, product.k
    scale = product.cloud_scales(a_scale)
    grad_a = np.empty((batch, points, k), np.float32)
    grad_weight = np.empty((weight.shape[0], k), np.float32)
    kernels().layer_backward_fused(g, product.p, *coef, *e, float32_array(weight.detach()), product.bits, scale, 0, batch,
                                   batch, points, product.padded, weight.shape[0], k, product.words, grad_a,
                                   grad_weight, product.path, threads_for(batch))
    return torch.from_numpy(grad_a), torch.from_numpy(grad_weight)


def _products_unfused(g, product, coef, e, weight, a_scale):
    """The same two products on the generic path: d r [B, N, C] from the kernel, then torch's matmuls."""
    batch, points, k, channels = product.batch, product.points, product.k, weight.shape[0]
    grad_r = np.empty((batch, points, channels), np.float32)
    kernels().layer_backward(g, product.p, *coef, *e, 0, batch, batch, points, product.padded, channels, grad_r,
                             product.path, threads_for(batch))
    grad_r = torch.from_numpy(grad_r)
    grad_a = grad_r @ weight
    if a_scale is not None:
        grad_a *= a_scale.detach()[:, None, None]
    a = product.values(a_scale)
    return grad_a, grad_r.reshape(-1, channels).T @ a.reshape(-1, k)


def point_layer(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None, bn: nn.BatchNorm1d,
                magnitudes: tuple[torch.Tensor | None, torch.Tensor | None]) -> torch.Tensor:
    """hardtanh(bn(scale * (sign(x) s_b) @ weight^T)) for a BatchNorm in training mode.

    x: float32 [B, N, K] (K <= 255) whose signs are the activation pattern (sign(0) = +1); its
    gradient is the pattern's (x as a quantizer's hardtanh_pattern_source gives it, whose
    backward applies the estimator, or its +-1 pattern); weight: float32 [C, K], +-r_c per row;
    magnitudes (s [B] or None, r [C] or None) as BinaryLinear.quantized_operands gives them;
    scale: a 0-d output scale (LSR's, a constant: it gets no gradient) or None; bn: BatchNorm1d(C), whose running statistics are
    updated as in its forward. Returns float32 [B, N, C].
    """
    return _PointLayer.apply(x, weight, scale, bn.weight, bn.bias, bn, magnitudes, resolve_path())
