"""The binary training kernels' Python face: popcount paths, thread counts, scratch buffers, and the popcounts of a binary layer's +-1 operands with the moments BatchNorm needs.

Used by the fused layers (pointdistill.binary.point_layer, point_pool); kernels in
``_point_kernels.c``. The AVX-512 path (F, BW and VPOPCNTDQ: its popcounts, the AVX2 bodies for
the rest) runs where the CPU has them; the AVX2 path on every x86-64 CPU with AVX2; the generic
path is plain C and runs anywhere, slower. All three give the same results.
"""

from __future__ import annotations

import functools
import logging
import os
import weakref

import numpy as np
import torch
from torch import nn

from pointdistill.choices import TRAINING_KERNEL_NAMES

try:
    from pointdistill.binary import _point_kernels
except ImportError:  # not built: the fused path is unavailable, the reference path still works
    _point_kernels = None

KERNEL_ENV = "POINTDISTILL_TRAIN_KERNEL"  # the popcount path under "fast"
_PATH_CODES = {"avx512": 2, "avx2": 1, "generic": 0}
MAX_BINARY_INPUTS = 255  # popcounts are kept as bytes
_log = logging.getLogger(__name__)


def kernels():
    """The compiled training kernels (``_point_kernels``)."""
    if _point_kernels is None:
        raise RuntimeError("pointdistill.binary._point_kernels is not built; reinstall the package "
                           "(pip install -e .) or train with kernel='reference'")
    return _point_kernels


def available_paths() -> tuple[str, ...]:
    """The popcount paths this CPU runs, fastest first (empty when the extension is not built)."""
    return tuple(_point_kernels.paths()) if _point_kernels is not None else ()


def resolve_path(path: str | None = None) -> str:
    """``path`` or ``$POINTDISTILL_TRAIN_KERNEL`` (``auto``, ``avx512``, ``avx2``, ``generic``)."""
    path = path or os.environ.get(KERNEL_ENV, "auto")
    available = kernels().paths()
    if path == "auto":
        return available[0]
    if path not in _PATH_CODES:
        raise ValueError(f"unknown training kernel path {path!r} (from ${KERNEL_ENV}); "
                         f"one of {['auto', *_PATH_CODES]}")
    if path not in available:
        raise RuntimeError(f"training kernel path {path!r} cannot run on this CPU; available: {list(available)}")
    return path


def path_code(path: str | None = None) -> int:
    """The kernels' code for ``path`` (resolved as in resolve_path)."""
    return _PATH_CODES[resolve_path(path)]


def fuses_backward_products(path: int) -> bool:
    """Whether the kernels' path (a code) takes the fused point layer's input and weight gradients
    itself, tile by tile (AVX2 and AVX-512); the generic path leaves them to torch's matmuls."""
    return path >= _PATH_CODES["avx2"]


def threads_for(total: int) -> int:
    """How many slices the kernels split ``total`` clouds (rows) into: torch's thread count, at
    most one slice per cloud. The kernels run the slices on torch's own OpenMP threads."""
    return max(1, min(torch.get_num_threads(), total))


class _BufferPool:
    """Large scratch arrays handed out again once their owner is garbage: a fresh 32 MB array
    per training step costs more in page faults than the kernel that fills it."""

    def __init__(self):
        self._free: dict[tuple, list[np.ndarray]] = {}

    def take(self, owner: object, shape: tuple[int, ...], dtype) -> np.ndarray:
        key = (tuple(shape), np.dtype(dtype).str)
        free = self._free.setdefault(key, [])
        array = free.pop() if free else np.empty(shape, dtype)
        weakref.finalize(owner, free.append, array)
        return array


_buffers = _BufferPool()


def float32_array(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.to(torch.float32).numpy())


def pack_signs(x: np.ndarray, path: int) -> np.ndarray:
    """float32 [R, K] -> sign bits uint64 [R, W] (bit k of word k // 64 set where x >= 0)."""
    rows, k = x.shape
    words = -(-k // 64)
    out = np.empty((rows, words), np.uint64)
    _point_kernels.pack_signs(x, 0, rows, rows, k, words, out, path, threads_for(rows))
    return out


class SignBits:
    """The sign bits of a binary layer's operands: a float32 [B, N, K] (only its signs are read)
    and weight float32 [C, K], channels padded to P = 32 * ceil(C / 32); K <= 255."""

    def __init__(self, a: torch.Tensor, weight: torch.Tensor, path: str):
        self.batch, self.points, self.k = a.shape
        self.channels = weight.shape[0]
        self.padded = 32 * -(-self.channels // 32)
        self.words = -(-self.k // 64)
        self.path = _PATH_CODES[path]
        self.bits = pack_signs(a.detach().contiguous().numpy().reshape(-1, self.k), self.path)
        w_signs = np.ones((self.padded, self.k), np.float32)  # padding channels: never read back
        w_signs[:self.channels] = weight.detach().numpy()
        self.w_bits = pack_signs(w_signs, self.path)

    def grams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per cloud, the Gram matrix of the signs sum_n s_ni s_nj, int32 [B, K, K], and their
        sums sum_n s_nk, int32 [B, K]: exact integers."""
        gram = np.empty((self.batch, self.k, self.k), np.int32)
        sums = np.empty((self.batch, self.k), np.int32)
        _point_kernels.sign_grams(self.bits, 0, self.batch, self.batch, self.points, self.words, self.k, gram, sums,
                                  self.path, threads_for(self.batch))
        return torch.from_numpy(gram), torch.from_numpy(sums)

    def values(self, a_scale: torch.Tensor | None) -> torch.Tensor:
        """The binary activation sign(a) * a_scale[b] (a_scale float32 [B], None: 1), float32
        [B, N, K], rebuilt from the bits: exactly the values the autograd path multiplies."""
        rows = self.batch * self.points
        scale = self.cloud_scales(a_scale)
        out = _buffers.take(self, (rows, self.k), np.float32)
        _point_kernels.unpack_signs(self.bits, scale, 0, rows, rows, self.k, self.words, self.points, out,
                                    threads_for(rows))
        return torch.from_numpy(out).view(self.batch, self.points, self.k)

    def cloud_scales(self, a_scale: torch.Tensor | None) -> np.ndarray:
        """The activation's per-cloud magnitudes as the kernels take them: float32 [B] (None: 1)."""
        return (np.ones(self.batch, np.float32) if a_scale is None
                else np.ascontiguousarray(a_scale.detach().to(torch.float32).numpy()))

    def _extremes(self, low: np.ndarray, high: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.from_numpy(low[:, :self.channels]).long(), torch.from_numpy(high[:, :self.channels]).long())


class BinaryProduct(SignBits):
    """popcount(a XOR w) at every (cloud, point, channel), kept as bytes p uint8 [B, N, P], with
    its extremes over the points: what the point layers read back."""

    def __init__(self, a: torch.Tensor, weight: torch.Tensor, path: str):
        super().__init__(a, weight, path)
        self.p = _buffers.take(self, (self.batch, self.points, self.padded), np.uint8)
        self.low, self.high = (np.empty((self.batch, self.padded), np.uint8) for _ in range(2))
        shape = (self.batch, self.points, self.words, self.padded)
        _point_kernels.popcounts(self.bits, self.w_bits, 0, self.batch, *shape, self.p, self.low, self.high, self.path,
                                 threads_for(self.batch))

    def extremes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """min and max over points of the popcount, int64 [B, C] each."""
        return self._extremes(self.low, self.high)


RISING, FALLING, FLAT = 0, 1, 2  # the pooled extreme: max product (min popcount), min product, every point


class TieList:
    """The points where each (cloud, channel) reaches its pooled extreme, listed per cloud as
    n * P + c in increasing order (FLAT channels tie at every point and are not listed), and the
    max's gradient over them. ``kind`` int [B, C]: RISING, FALLING or FLAT per (cloud, channel)."""

    def __init__(self, batch: int, points: int, channels: int, kind: torch.Tensor, path: int, fill):
        """fill(tie_list) runs the listing kernel into ``counts_all``, ``ties`` and ``total``; it
        runs again with more room when a cloud has more than 16 ties per channel on average (real
        ModelNet40 clouds give a fresh binary student about 4, and up to 6 in a cloud)."""
        self.batch, self.points, self.channels, self.path = batch, points, channels, path
        self.padded = 32 * -(-channels // 32)
        self.kind = np.full((batch, self.padded), FLAT, np.uint8)  # padding channels: never listed
        self.kind[:, :channels] = kind.numpy()
        self.counts_all = np.empty((batch, self.padded), np.int32)
        self.total = np.zeros(batch, np.int64)
        self.cap = 16 * self.padded
        while True:
            self.ties = np.empty((batch, self.cap), np.int32)
            fill(self)
            if self.total.max() <= self.cap:
                break
            self.cap = int(self.total.max())

    def counts(self) -> torch.Tensor:
        """How many points reach the pooled extreme (N where FLAT), int64 [B, C]."""
        return torch.from_numpy(self.counts_all[:, :self.channels]).long()

    def scatter(self, coef: torch.Tensor, a: torch.Tensor, weight: torch.Tensor, grad_a: torch.Tensor) -> torch.Tensor:
        """Over the tied (b, c, n): add coef[b, c] * weight[c] to grad_a[b, n] (float32 [B, N, K],
        in place) and return the sum of coef[b, c] * a[b, n], float32 [C, K]."""
        k = a.shape[-1]
        padded_coef = np.zeros((self.batch, self.padded), np.float32)
        padded_coef[:, :self.channels] = coef.numpy()
        w = np.zeros((self.padded, k), np.float32)
        w[:self.channels] = weight.numpy()
        a_np, into = a.contiguous().numpy(), grad_a.numpy()
        threads = threads_for(self.batch)
        sparse_w = np.zeros((threads, self.padded, k), np.float32)  # each slice's own sum
        _point_kernels.scatter_ties(self.ties, self.total, self.kind, padded_coef, a_np, w, 0, self.batch, self.batch,
                                    self.points, self.padded, k, self.cap, sparse_w, into, self.path, threads)
        return torch.from_numpy(sum(sparse_w)[:self.channels])  # slice by slice, in order


class PooledProduct(SignBits):
    """The extremes over points of popcount(a XOR w) per (cloud, channel) and the ``tie_list``
    of the points where the pooled one is reached (RISING pools the min popcount, FALLING the
    max), found without keeping the [B, N, C] popcounts."""

    def __init__(self, a: torch.Tensor, weight: torch.Tensor, kind: torch.Tensor, path: str):
        super().__init__(a, weight, path)
        self.low, self.high = (np.empty((self.batch, self.padded), np.uint8) for _ in range(2))

        def fill(ties: TieList) -> None:
            _point_kernels.pool_ties(self.bits, self.w_bits, ties.kind, 0, self.batch, self.batch, self.points,
                                     self.words, self.padded, ties.cap, self.low, self.high, ties.counts_all,
                                     ties.ties, ties.total, self.path, threads_for(self.batch))

        self.tie_list = TieList(self.batch, self.points, self.channels, kind, self.path, fill)

    def extremes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """min and max over points of the popcount, int64 [B, C] each."""
        return self._extremes(self.low, self.high)


def sign_moments(product: SignBits, a_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For a binary input a = a_scale[b] * signs (a_scale float64 [B]): the per-cloud sums
    float64 [B, K], their total [K] and the centred Gram matrix sum (a - abar)^T (a - abar),
    float64 [K, K], all from exact integer popcounts."""
    sign_gram, sign_sums = product.grams()
    cloud_sum = a_scale[:, None] * sign_sums.double()
    a_sum = cloud_sum.sum(0)
    m = product.batch * product.points
    gram = torch.einsum("b,bij->ij", a_scale ** 2, sign_gram.double()) - torch.outer(a_sum, a_sum) / m
    return cloud_sum, a_sum, gram


def product_moments(weight: torch.Tensor, a_sum: torch.Tensor, gram: torch.Tensor,
                    m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (biased) variance over the m points of r = a @ weight^T, float64 [C] each, from
    the input sum [K] and centred Gram matrix [K, K]: mean_c = w_c . abar, var_c = w_c^T G w_c / m."""
    w64 = weight.double()
    return (w64 @ a_sum) / m, ((w64 @ gram) * w64).sum(1).div(m).clamp_min(0)


def magnitudes_or_ones(magnitudes: tuple[torch.Tensor | None, torch.Tensor | None], batch: int,
                       channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A binary layer's (per-cloud [B], per-channel [C]) magnitudes as float64, None read as 1."""
    return tuple(torch.ones(n, dtype=torch.float64) if v is None else v.detach().double()
                 for v, n in zip(magnitudes, (batch, channels)))


def update_running_stats(bn: nn.BatchNorm1d, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
    """What nn.BatchNorm1d does to its buffers in a training step (unbiased running variance)."""
    if not bn.track_running_stats:
        return
    bn.num_batches_tracked.add_(1)
    factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    bn.running_mean.mul_(1 - factor).add_(factor * mean.to(bn.running_mean.dtype))
    bn.running_var.mul_(1 - factor).add_(factor * (var * count / max(count - 1, 1)).to(bn.running_var.dtype))


def check_training_kernel(kernel: str) -> None:
    if kernel not in TRAINING_KERNEL_NAMES:
        raise ValueError(f"training kernel {kernel!r} unknown; one of {list(TRAINING_KERNEL_NAMES)}")


@functools.cache
def _say_fallback(reason: str) -> None:
    _log.warning("fused point layer not used (%s): training takes the autograd reference path", reason)


def fused_path_applies(kernel: str, x: torch.Tensor, bn: nn.BatchNorm1d, binary: bool) -> bool:
    """Whether a fused layer (point_layer, point_pool) runs for its input x [B, N, K]: asked for, training-mode
    BatchNorm with batch statistics, float32 on the CPU, and for a binary layer K <= 255 (bytes
    hold its popcounts; a wider input falls back, said once in the log). Everything else takes
    the autograd path."""
    applies = (kernel == "fast" and bn.training and bn.affine and x.device.type == "cpu"
               and x.dtype == torch.float32 and x.shape[0] * x.shape[1] > 1)
    if applies and not available_paths():
        _say_fallback("pointdistill.binary._point_kernels is not built")
        return False
    if applies and binary and x.shape[-1] > MAX_BINARY_INPUTS:
        _say_fallback(f"a binary layer with {x.shape[-1]} > {MAX_BINARY_INPUTS} inputs")
        return False
    return applies
