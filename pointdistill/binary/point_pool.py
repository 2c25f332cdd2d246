"""The widest (last) point layer, its BatchNorm and the max over points, fused for CPU training.

PointNet's widest layer (128 -> 1024 per point) feeds a training-mode BatchNorm and a max over
the N points of each cloud. The autograd path forms the dense [B, N, C] product three times
(forward, weight gradient, input gradient) and a dense mask for the max's backward. This module
computes the same loss and the same gradients without the dense backward products:

* BatchNorm is monotone per channel, so max_n BN(y) is BN at the max (or, where the slope
  gamma * scale is negative, the min) of the raw product r = a . w_c. Binary layers find it with
  XNOR-popcount kernels (``_point_kernels.c``: a nibble-lookup popcount on AVX2, plain C
  elsewhere) that, per cloud, find the extremes and list the points that reach the pooled one in
  a cache-resident scratch; float layers (the teacher) with one matmul per cloud, reduced by the
  same kind of kernel while the product is still in cache. No [B, N, C] array is kept.
* The batch statistics come from the input mean and the K x K Gram matrix of the centred input:
  mean_c = w_c . abar, var_c = w_c^T G w_c / M (M = B N points). A binary input's Gram is exact:
  popcounts of its sign bits, point axis packed.
* Only tied maxima receive the max's gradient (split evenly among ties, as torch does). The
  BatchNorm backward adds a term that is affine in y, so the weight gradient needs G w_c and
  the input gradient (a - abar) @ (W^T diag(beta0) W): K x K products, never K x C x M ones.

Everything small is computed in float64. ``pointdistill.binary.point_pool`` is exact against
the autograd path within float32 rounding (tests/binary/test_point_pool.py); a binary layer's
argmax and ties are identical there, since its products are integers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pointdistill.binary.popcount import (
    FALLING, FLAT, RISING, PooledProduct, TieList, kernels, magnitudes_or_ones, path_code, threads_for,
    product_moments, resolve_path, sign_moments, update_running_stats,
)


class _FloatTies:
    """A float layer's pooled extreme per (cloud, channel), top float64 [B, C], and the
    ``tie_list`` of the points that reach it: one matmul per cloud, reduced by a kernel."""

    def __init__(self, a: torch.Tensor, weight: torch.Tensor, kind: torch.Tensor, path: str):
        """a [B, N, K], weight [C, K], kind [B, C] (RISING pools the max product, FALLING the min),
        path: the kernel path (resolve_path)."""
        batch, points, _ = a.shape
        channels = weight.shape[0]
        padded = 32 * -(-channels // 32)
        w = torch.zeros(padded, weight.shape[1], dtype=a.dtype)
        w[:channels] = weight
        top = np.empty((batch, padded), np.float32)
        code = path_code(path)

        def fill(ties: TieList) -> None:
            # One cloud per thread at a time: their [N, P] products (4 MB each at ModelNet40's sizes)
            # are still in cache when the kernel scans them, one cloud on each thread. One cloud
            # per matmul, scanned on one thread while torch's other threads spun, made a teacher
            # step 160-182 ms against 139-144 (2 threads); eight clouds per matmul (32 MB) was
            # slower than one.
            group = threads_for(batch)
            for b in range(0, batch, group):
                end = min(b + group, batch)
                r = (a[b:end] @ w.T).numpy()  # [end - b, N, P]
                kernels().float_ties(r, ties.kind, b, end, batch, points, padded, ties.cap, top, ties.counts_all,
                                     ties.ties, ties.total, code, threads_for(end - b))

        self.tie_list = TieList(batch, points, channels, kind, code, fill)
        self.top = torch.from_numpy(top[:, :channels]).double()


class _PointPool(torch.autograd.Function):
    """z_top[b, c] = max_n BN(scale * (a[b, n] . weight[c]))[b, n, c] for a training-mode BatchNorm."""

    @staticmethod
    def forward(ctx, a, weight, scale, gamma, beta, bn, magnitudes, path):
        batch, points, k = a.shape
        m = batch * points
        s = float(scale) if scale is not None else 1.0
        w64, g64 = weight.detach().double(), gamma.detach().double()
        a_scale, w_scale = magnitudes_or_ones(magnitudes or (None, None), batch, weight.shape[0])
        slope = g64[None, :] * s * a_scale[:, None] * w_scale[None, :]  # [B, C], d BN / d (sign) product
        kind = torch.where(slope > 0, RISING, torch.where(slope < 0, FALLING, FLAT))
        if magnitudes is not None:  # a binary layer: activation a_scale[b] * sign(a), weight w_scale[c] * signs
            product = PooledProduct(a, weight, kind, path)
            cloud_sum, a_sum, gram = sign_moments(product, a_scale)  # exact
            p_min, p_max = product.extremes()
            dot = k - 2 * torch.where(kind == FALLING, p_max, p_min).double()
            r_top, tie_list = a_scale[:, None] * w_scale[None, :] * dot, product.tie_list  # [B, C]
        else:
            cloud_sum = a.sum(dim=1).double()  # [B, K]
            a_sum = cloud_sum.sum(0)
            centred = (a - (a_sum / m).to(a.dtype)).reshape(m, k)
            gram = (centred.T @ centred).double()  # [K, K], centred
            del centred
            ties = _FloatTies(a.detach(), weight.detach(), kind, path)
            r_top, tie_list = ties.top, ties.tie_list
        a_mean = a_sum / m
        r_mean, r_var = product_moments(weight.detach(), a_sum, gram, m)
        mean, var = s * r_mean, s * s * r_var
        invstd = (var + bn.eps).rsqrt()
        every, counts = kind == FLAT, tie_list.counts()
        ctx.ties = tie_list
        z_top = g64 * (s * r_top - mean) * invstd + beta.detach().double()
        # The max's gradient goes to the tied points; their mean product is r_top, or the cloud's
        # mean product where every point ties (a zero slope: BN(y) is constant over the points).
        cloud_mean = (cloud_sum @ w64.T) / points  # [B, C]
        r_tied = torch.where(every, cloud_mean, r_top)
        update_running_stats(bn, mean, var, m)
        ctx.s, ctx.m = s, m
        if magnitudes is not None:  # the binary activation is rebuilt from the sign bits in backward
            ctx.product, ctx.a_scale = product, magnitudes[0]
            ctx.save_for_backward(weight, gamma)
        else:
            ctx.product = None
            ctx.save_for_backward(weight, gamma, a)
        ctx.stats = (a_sum, a_mean, gram, invstd, r_tied, counts.double(), mean)
        return z_top.to(a.dtype)

    @staticmethod
    def backward(ctx, grad):
        weight, gamma, *saved = ctx.saved_tensors
        a = saved[0] if ctx.product is None else ctx.product.values(ctx.a_scale)
        a_sum, a_mean, gram, invstd, r_tied, counts, mean = ctx.stats
        s, m = ctx.s, ctx.m
        g = grad.double()  # [B, C]
        w64 = weight.double()
        p = gamma.double() * invstd  # BN slope per channel [C]
        dbeta = g.sum(0)
        dgamma = (g * (s * r_tied - mean) * invstd).sum(0)
        lin = -p * dgamma * invstd / m  # d y gets lin_c * (y - mean_c)
        const = -p * dbeta / m  # ... and const_c
        kmat = s * s * (w64.T * lin) @ w64  # [K, K]
        row = s * (w64.T @ const) - kmat @ a_mean  # [K]
        grad_a = torch.addmm(row.to(a.dtype), a.reshape(-1, a.shape[-1]), kmat.to(a.dtype)).view(a.shape)  # [B, N, K]
        point_coef = s * p * g / counts  # d r at each tied point, [B, C]
        sparse_w = ctx.ties.scatter(point_coef.to(a.dtype), a.detach(), weight.detach(), grad_a)
        grad_weight = (sparse_w.double() + s * const[:, None] * a_sum[None, :]
                       + s * s * lin[:, None] * (w64 @ gram)).to(weight.dtype)
        if ctx.product is not None and ctx.a_scale is not None:  # d x = d activation * s_b
            grad_a *= ctx.a_scale.detach()[:, None, None]
        return grad_a, grad_weight, None, dgamma.to(gamma.dtype), dbeta.to(gamma.dtype), None, None, None


def point_pool(a: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None, bn: nn.BatchNorm1d,
               magnitudes: tuple[torch.Tensor | None, torch.Tensor | None] | None = None) -> torch.Tensor:
    """max over points of bn(scale * a @ weight^T) for a BatchNorm in training mode.

    a: float32 [B, N, K], the layer input, features last; weight: float32 [C, K]; scale: a 0-d
    output scale (LSR's, a constant: it gets no gradient) or None; bn: BatchNorm1d(C), whose running statistics are updated as in
    its forward. magnitudes: for a binary layer, (s [B] or None, r [C] or None) with the
    activation sign(a) s_b per cloud and weight = +-r_c per row (None: 1), as
    BinaryLinear.quantized_operands gives them: a's gradient is then the pattern's (a is the
    quantizer's hardtanh_pattern_source of a Hardtanh output, whose backward applies any estimator
    but the clipped one, or its +-1 pattern), as in point_layer; None for a float layer.
    Returns float32 [B, C]: the pooled BatchNorm output, before any offset or activation.
    The kernels run the path of ``$POINTDISTILL_TRAIN_KERNEL`` (default: the fastest).
    """
    return _PointPool.apply(a, weight, scale, bn.weight, bn.bias, bn, magnitudes, resolve_path())
