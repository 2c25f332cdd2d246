"""The last point layer, its BatchNorm and the max over points, fused for CPU training.

PointNet's widest layer (128 -> 1024 per point) feeds a training-mode BatchNorm and a max over
the N points of each cloud. The autograd path forms the dense [B, C, N] product three times
(forward, weight gradient, input gradient) and a dense mask for the max's backward. This module
computes the same loss and the same gradients without the dense backward products:

* BatchNorm is monotone per channel, so max_n BN(y) is BN at the max (or, where the slope
  gamma * scale is negative, the min) of the raw product r = a . w_c. Binary layers find it with
  XNOR-popcount kernels (``_point_kernels.c``) on sign bits; float layers (the teacher) with one
  matmul per cloud that is reduced at once.
* The batch statistics come from the input mean and the K x K Gram matrix of the centred input:
  mean_c = w_c . abar, var_c = w_c^T G w_c / M (M = B N points).
* Only tied maxima receive the max's gradient (split evenly among ties, as torch does). The
  BatchNorm backward adds a term that is affine in y, so the weight gradient needs G w_c and
  the input gradient (a - abar) @ (W^T diag(beta0) W): K x K products, never K x C x M ones.

Everything small is computed in float64. ``pointdistill.binary.point_pool`` is exact against
the autograd path within float32 rounding (tests/binary/test_point_pool.py); a binary layer's
argmax and ties are identical there, since its products are integers.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from pointdistill.choices import TRAINING_KERNEL_NAMES

try:
    from pointdistill.binary import _point_kernels
except ImportError:  # not built: the fused path is unavailable, the reference path still works
    _point_kernels = None

KERNEL_ENV = "POINTDISTILL_TRAIN_KERNEL"  # the popcount path under "fast"
_PATH_CODES = {"avx512": 2, "popcnt": 1, "generic": 0}


def available_paths() -> tuple[str, ...]:
    """The popcount paths this CPU runs, fastest first (empty when the extension is not built)."""
    return tuple(_point_kernels.paths()) if _point_kernels is not None else ()


def resolve_path(path: str | None = None) -> str:
    """``path`` or ``$POINTDISTILL_TRAIN_KERNEL`` (``auto``, ``avx512``, ``popcnt``, ``generic``)."""
    path = path or os.environ.get(KERNEL_ENV, "auto")
    available = available_paths()
    if not available:
        raise RuntimeError("pointdistill.binary._point_kernels is not built; reinstall the package "
                           "(pip install -e .) or train with kernel='reference'")
    if path == "auto":
        return available[0]
    if path not in _PATH_CODES:
        raise ValueError(f"unknown training kernel path {path!r} (from ${KERNEL_ENV}); "
                         f"one of {['auto', *_PATH_CODES]}")
    if path not in available:
        raise RuntimeError(f"training kernel path {path!r} cannot run on this CPU; available: {list(available)}")
    return path


class _SignBits:
    """Sign bits of a binary layer's operands in the kernels' layout, and the work split."""

    def __init__(self, a: torch.Tensor, weight: torch.Tensor, path: str):
        self.batch, self.k, self.points = a.shape
        self.channels = weight.shape[0]
        self.words = -(-self.k // 64)
        self.groups = -(-self.channels // 8)
        self.path = _PATH_CODES[path]
        self.a = np.empty((self.batch, self.points, self.words), np.uint64)
        _point_kernels.pack_signs(a.detach().contiguous().numpy(), self.batch, self.k, self.points, self.words, self.a)
        w_bits = np.zeros((self.groups * 8, 1, self.words), np.uint64)
        _point_kernels.pack_signs(weight.detach().contiguous().numpy(), self.channels, self.k, 1, self.words,
                                  w_bits[:self.channels])
        self.w = np.ascontiguousarray(w_bits.reshape(self.groups, 8, self.words).transpose(0, 2, 1))
        workers = max(1, min(torch.get_num_threads(), self.batch))
        edges = np.linspace(0, self.batch, workers + 1).astype(int)
        self.ranges = [(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:])]

    def _run(self, call) -> list:
        if len(self.ranges) == 1:
            return [call(*self.ranges[0])]
        with ThreadPoolExecutor(len(self.ranges)) as pool:
            return list(pool.map(lambda r: call(*r), self.ranges))

    def _int_out(self) -> np.ndarray:
        return np.empty((self.batch, self.groups * 8), np.int32)

    def extremes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """min and max over points of popcount(a XOR w), int32 [B, C] each."""
        lo, hi = self._int_out(), self._int_out()
        self._run(lambda b0, b1: _point_kernels.extremes(
            self.a, self.w, b0, b1, self.batch, self.points, self.words, self.groups, lo, hi, self.path))
        return torch.from_numpy(lo[:, :self.channels]), torch.from_numpy(hi[:, :self.channels])

    def _padded(self, x: torch.Tensor, dtype) -> np.ndarray:
        out = np.zeros((self.batch, self.groups * 8), dtype)
        out[:, :self.channels] = x.numpy()
        return out

    def count_ties(self, target: torch.Tensor) -> torch.Tensor:
        """Find the points whose popcount equals ``target`` (int32 [B, C]; -1: every point) and
        return how many there are per (cloud, channel), int64 [B, C]. Kept for ``scatter``."""
        self.target = self._padded(target, np.int32)
        self.counts, self.first = self._int_out(), self._int_out()
        self._run(lambda b0, b1: _point_kernels.tie_counts(
            self.a, self.w, self.target, b0, b1, self.batch, self.points, self.words, self.groups, self.counts,
            self.first, self.path))
        return torch.from_numpy(self.counts[:, :self.channels]).long()

    def scatter(self, coef_w: torch.Tensor, coef_a: torch.Tensor, grad_a: torch.Tensor) -> torch.Tensor:
        """Over the tied (b, c, n): add coef_a[b, c] * sign(w[c]) to grad_a[b, n] (float32
        [B, N, K], in place) and return the sum of coef_w[b, c] * sign(a[b, n]), float32 [C, K]."""
        coef_w, coef_a = self._padded(coef_w, np.float32), self._padded(coef_a, np.float32)
        into = grad_a.numpy()
        sparse_w = [np.zeros((self.groups * 8, self.k), np.float32) for _ in self.ranges]
        self._run(lambda b0, b1: _point_kernels.scatter_ties(
            self.a, self.w, self.target, self.counts, self.first, coef_w, coef_a, b0, b1, self.batch, self.points,
            self.words, self.groups, self.k, sparse_w[self.ranges.index((b0, b1))], into, self.path))
        return torch.from_numpy(sum(sparse_w)[:self.channels])


class _FloatTies:
    """Extremes and ties of a float layer's product, one matmul per cloud, reduced at once."""

    def __init__(self, a: torch.Tensor, weight: torch.Tensor, slope: torch.Tensor):
        """a [B, K, N], weight [C, K], slope [C]: the sign of d BN(y) / d r (0: every point ties)."""
        falling, flat = slope < 0, slope == 0
        channels = torch.arange(weight.shape[0])
        tops, b_index, c_index, n_index = [], [], [], []
        for b in range(a.shape[0]):
            r = weight @ a[b]  # [C, N]
            top, at = r.max(dim=1)  # the first maximum
            if falling.any():
                low, low_at = r.min(dim=1)
                top, at = torch.where(falling, low, top), torch.where(falling, low_at, at)
            tied = r == top[:, None]
            if flat.any():
                tied[flat] = True
            tied[channels, at] = False  # the first tie is known: is there a second?
            many = tied.any(dim=1)
            c_single = (~many).nonzero()[:, 0]
            c_many = n_many = c_single[:0]
            if many.any():
                tied[channels, at] = True
                c_many, n_many = tied[many].nonzero(as_tuple=True)
                c_many = many.nonzero()[:, 0][c_many]
            tops.append(top)
            c_index += [c_single, c_many]
            n_index += [at[c_single], n_many]
            b_index.append(torch.full((len(c_single) + len(c_many),), b, dtype=torch.int64))
        self.top = torch.stack(tops)  # [B, C]
        self.b, self.c, self.n = torch.cat(b_index), torch.cat(c_index), torch.cat(n_index)
        self.counts = torch.zeros_like(self.top, dtype=torch.int64).index_put_(
            (self.b, self.c), torch.ones_like(self.b), accumulate=True)

    def scatter(self, a: torch.Tensor, weight: torch.Tensor, coef: torch.Tensor, grad_a: torch.Tensor) -> torch.Tensor:
        """Over the tied (b, c, n): add coef[b, c] * w[c] to grad_a[b, n] ([B, N, K], in place)
        and return the sum of coef[b, c] * a[b, :, n], [C, K]."""
        c = coef[self.b, self.c].to(a.dtype)[:, None]
        grad_a.index_put_((self.b, self.n), c * weight[self.c], accumulate=True)
        rows = a.transpose(1, 2).contiguous()[self.b, self.n]  # [T, K]
        return torch.zeros_like(weight).index_add_(0, self.c, c * rows)


def _update_running_stats(bn: nn.BatchNorm1d, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
    """What nn.BatchNorm1d does to its buffers in a training step (unbiased running variance)."""
    if not bn.track_running_stats:
        return
    bn.num_batches_tracked.add_(1)
    factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    bn.running_mean.mul_(1 - factor).add_(factor * mean.to(bn.running_mean.dtype))
    bn.running_var.mul_(1 - factor).add_(factor * (var * count / max(count - 1, 1)).to(bn.running_var.dtype))


class _PointPool(torch.autograd.Function):
    """z_top[b, c] = max_n BN(scale * (a[b, :, n] . weight[c]))[b, c, n] for a training-mode BatchNorm."""

    @staticmethod
    def forward(ctx, a, weight, scale, gamma, beta, bn, magnitudes, path):
        batch, k, points = a.shape
        m = batch * points
        s = float(scale) if scale is not None else 1.0
        cloud_sum = a.sum(dim=2).double()  # [B, K] (exact for +-1 inputs)
        a_sum = cloud_sum.sum(0)  # [K]
        a_mean = a_sum / m
        centred = a - a_mean.to(a.dtype)[None, :, None]
        gram = torch.bmm(centred, centred.transpose(1, 2)).sum(0).double()  # [K, K], centred
        del centred
        w64, g64 = weight.detach().double(), gamma.detach().double()
        r_mean = (w64 @ a_sum) / m  # [C]; exact where the product is constant over the batch
        r_var = ((w64 @ gram) * w64).sum(1).div(m).clamp_min(0)  # [C]
        mean, var = s * r_mean, s * s * r_var
        invstd = (var + bn.eps).rsqrt()
        binary = magnitudes is not None
        if binary:
            bits = _SignBits(a, weight, path)
            a_scale, w_scale = (torch.ones(n, dtype=torch.float64) if v is None else v.detach().double()
                                for v, n in zip(magnitudes, (batch, weight.shape[0])))
            slope = g64[None, :] * s * a_scale[:, None] * w_scale[None, :]  # [B, C]
            p_min, p_max = bits.extremes()
            target = torch.where(slope > 0, p_min, p_max)
            target = torch.where(slope == 0, torch.full_like(target, -1), target)
            counts = bits.count_ties(target)
            dot = k - 2 * torch.where(target < 0, p_min, target).double()
            r_top = a_scale[:, None] * w_scale[None, :] * dot  # [B, C]
            every = target < 0
            ctx.ties = (bits, a_scale, w_scale)
        else:
            ties = _FloatTies(a.detach(), weight.detach(), torch.sign(g64 * s))
            counts, r_top = ties.counts, ties.top.double()
            every = (g64 * s == 0)[None, :].expand_as(r_top)
            ctx.ties = ties
        z_top = g64 * (s * r_top - mean) * invstd + beta.detach().double()
        # The max's gradient goes to the tied points; their mean product is r_top, or the cloud's
        # mean product where every point ties (a zero slope: BN(y) is constant over the points).
        cloud_mean = (cloud_sum @ w64.T) / points  # [B, C]
        r_tied = torch.where(every, cloud_mean, r_top)
        _update_running_stats(bn, mean, var, m)
        ctx.binary, ctx.s, ctx.m, ctx.eps, ctx.has_scale = binary, s, m, bn.eps, scale is not None
        ctx.save_for_backward(a, weight, gamma)
        ctx.stats = (a_sum, a_mean, gram, r_mean, invstd, r_tied, counts.double(), mean)
        return z_top.to(a.dtype)

    @staticmethod
    def backward(ctx, grad):
        a, weight, gamma = ctx.saved_tensors
        a_sum, a_mean, gram, r_mean, invstd, r_tied, counts, mean = ctx.stats
        s, m, bn_eps = ctx.s, ctx.m, ctx.eps
        g = grad.double()  # [B, C]
        w64 = weight.double()
        p = gamma.double() * invstd  # BN slope per channel [C]
        dbeta = g.sum(0)
        dgamma = (g * (s * r_tied - mean) * invstd).sum(0)
        lin = -p * dgamma * invstd / m  # d y gets lin_c * (y - mean_c)
        const = -p * dbeta / m  # ... and const_c
        kmat = s * s * (w64.T * lin) @ w64  # [K, K]
        row = s * (w64.T @ const) - kmat @ a_mean  # [K]
        grad_a = torch.matmul(a.transpose(1, 2), kmat.to(a.dtype))  # [B, N, K]
        grad_a += row.to(a.dtype)
        point_coef = s * p * g / counts  # d r at each tied point, [B, C]
        if ctx.binary:
            bits, a_scale, w_scale = ctx.ties
            sparse_w = bits.scatter(point_coef * a_scale[:, None], point_coef * w_scale[None, :], grad_a)
        else:
            sparse_w = ctx.ties.scatter(a, weight, point_coef, grad_a)
        grad_weight = (sparse_w.double() + s * const[:, None] * a_sum[None, :]
                       + s * s * lin[:, None] * (w64 @ gram)).to(weight.dtype)
        grad_scale = None
        if ctx.has_scale:
            # BatchNorm is invariant to the scale but for eps: the two terms of sum(dy * r) cancel
            # to eps * sum_c p_c q_c invstd_c^2, q_c = sum_b g (r_tied - r_mean), computed directly.
            q = (g * (r_tied - r_mean)).sum(0)
            grad_scale = (bn_eps * (p * q * invstd ** 2).sum()).to(a.dtype)
        return (grad_a.transpose(1, 2), grad_weight, grad_scale, dgamma.to(gamma.dtype), dbeta.to(gamma.dtype),
                None, None, None)


def point_pool(a: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None, bn: nn.BatchNorm1d,
               magnitudes: tuple[torch.Tensor | None, torch.Tensor | None] | None = None) -> torch.Tensor:
    """max over points of bn(scale * conv1x1(a, weight)) for a BatchNorm in training mode.

    a: float32 [B, K, N], the layer input; weight: float32 [C, K]; scale: a 0-d output scale
    (LSR) or None; bn: BatchNorm1d(C), whose running statistics are updated as in its forward.
    magnitudes: for a binary layer, (s [B] or None, r [C] or None) with a = +-s_b per cloud and
    weight = +-r_c per row (None: 1), as BinaryLinear.quantized_operands gives them; None for a
    float layer.
    Returns float32 [B, C]: the pooled BatchNorm output, before any offset or activation.
    A binary layer runs the popcount path of ``$POINTDISTILL_TRAIN_KERNEL`` (default: the fastest).
    """
    path = resolve_path() if magnitudes is not None else None
    return _PointPool.apply(a, weight, scale, bn.weight, bn.bias, bn, magnitudes, path)


def check_training_kernel(kernel: str) -> None:
    if kernel not in TRAINING_KERNEL_NAMES:
        raise ValueError(f"training kernel {kernel!r} unknown; one of {list(TRAINING_KERNEL_NAMES)}")


def fused_pooling_applies(kernel: str, x: torch.Tensor, bn: nn.BatchNorm1d) -> bool:
    """Whether the fused path runs: asked for, training-mode BatchNorm with batch statistics,
    float32 on the CPU. Everything else takes the autograd path."""
    return (kernel == "fast" and bn.training and bn.affine and x.device.type == "cpu"
            and x.dtype == torch.float32 and x.shape[0] * x.shape[2] > 1)
