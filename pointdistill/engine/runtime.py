"""Running an exported network with the compiled kernels.

Kernel choice: ``POINTDISTILL_ENGINE_KERNEL`` = ``auto`` (default: AVX-512 VPOPCNTDQ where the
CPU has it, else scalar), ``avx512``, ``scalar`` (forces the fallback) or ``numpy`` (the
reference engine). Without the compiled extension, ``auto`` falls back to ``numpy`` with a warning.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from pointdistill.engine import reference
from pointdistill.engine.reference import record
from pointdistill.engine.export import pool_thresholds
from pointdistill.engine.model_file import BinaryNetwork, Layer, words

KERNEL_ENV = "POINTDISTILL_ENGINE_KERNEL"
KERNELS = ("auto", "avx512", "scalar", "numpy")

try:
    from pointdistill.engine import _kernels
except ImportError:  # built without a C compiler
    _kernels = None


def available_kernels() -> list[str]:
    """Kernels this machine can run, fastest first."""
    found = []
    if _kernels is not None:
        if _kernels.has_avx512_vpopcntdq():
            found.append("avx512")
        found.append("scalar")
    return [*found, "numpy"]


def resolve_kernel(kernel: str | None = None) -> str:
    kernel = kernel or os.environ.get(KERNEL_ENV, "auto")
    if kernel not in KERNELS:
        raise ValueError(f"unknown engine kernel {kernel!r} (from ${KERNEL_ENV} or the caller); one of {KERNELS}")
    available = available_kernels()
    if kernel == "auto":
        if _kernels is None:
            warnings.warn("pointdistill.engine._kernels is not built; using the (slow) NumPy reference engine",
                          RuntimeWarning, stacklevel=3)
        return available[0]
    if kernel not in available:
        raise RuntimeError(f"engine kernel {kernel!r} cannot run here; available: {available}")
    return kernel


def interleave(bits: np.ndarray) -> np.ndarray:
    """uint64 [M, Kw] -> [ceil(M / 8), Kw, 8]: word j of output channels 8g..8g+7 side by side
    (one 512-bit register), padding channels all zero."""
    m, kw = bits.shape
    groups = -(-m // 8)
    padded = np.zeros((groups * 8, kw), dtype=np.uint64)
    padded[:m] = bits
    return np.ascontiguousarray(padded.reshape(groups, 8, kw).transpose(0, 2, 1))


def padded_thresholds(threshold: np.ndarray) -> np.ndarray:
    """int64 [ceil(M / 8) * 8]: padding channels never fire (-1)."""
    out = np.full(-(-threshold.size // 8) * 8, -1, dtype=np.int64)
    out[: threshold.size] = threshold
    return out


class _PackedLayer:
    """A binary layer in the kernels' layout."""

    def __init__(self, layer: Layer):
        self.layer = layer
        self.weights = interleave(layer.tensors["bits"])
        self.groups, self.words = self.weights.shape[0], layer.tensors["bits"].shape[1]
        self.out_words = words(layer.outputs)
        self.thresholds = padded_thresholds(layer.tensors["threshold"]) if "threshold" in layer.tensors else None


class Engine:
    """An exported network ready to run: ``engine(points)`` -> logits."""

    def __init__(self, network: BinaryNetwork, kernel: str | None = None):
        self.network = network
        self.kernel = resolve_kernel(kernel)
        stem = network.layers[0].tensors
        m = network.layers[0].outputs
        m16 = -(-m // 16) * 16
        self.stem_weight = np.zeros((3, m16), dtype=np.float32)
        self.stem_weight[:, :m] = stem["weight"].T
        self.stem_scale = np.zeros(m16, dtype=np.float32)
        self.stem_scale[:m] = stem["scale"]
        self.stem_offset = np.full(m16, -1, dtype=np.float32)  # padding channels: bit 0
        self.stem_offset[:m] = stem["offset"]
        self.stem_out_words = words(m)
        layers = network.layers
        pool = next(i for i, layer in enumerate(layers) if layer.kind == "binary_pool")
        self.point_layers = [_PackedLayer(layer) for layer in layers[1:pool]]
        self.pool = _PackedLayer(layers[pool])
        self.head_layers = [_PackedLayer(layer) for layer in layers[pool + 1:-2]]
        self.float_layer = _PackedLayer(layers[-2])
        self._pool_thresholds: dict[int, np.ndarray] = {}

    @property
    def class_names(self) -> list[str]:
        return list(self.network.class_names)

    def pool_thresholds(self, num_points: int) -> np.ndarray:
        if num_points not in self._pool_thresholds:
            self._pool_thresholds[num_points] = padded_thresholds(
                pool_thresholds(self.pool.layer, self.network.aggregation, num_points))
        return self._pool_thresholds[num_points]

    def __call__(self, points: np.ndarray, trace: list | None = None) -> np.ndarray:
        """float32 [B, N, 3] -> logits float32 [B, C]; ``trace`` (a list) receives every layer's output
        (packed bits [B, N, words] per point layer, [B, words] after pooling, float before the classifier)."""
        if self.kernel == "numpy":
            return reference.forward(self.network, points, trace)
        points = reference.checked_points(points)
        b, n, _ = points.shape
        use_avx512 = int(self.kernel == "avx512")
        x = np.empty((b * n, self.stem_out_words), dtype=np.uint64)
        _kernels.stem(points, self.stem_weight, self.stem_scale, self.stem_offset, b * n, self.stem_weight.shape[1],
                      self.stem_out_words, x, use_avx512)
        record(trace, x.reshape(b, n, -1))
        for layer in self.point_layers:
            y = np.empty((b * n, layer.out_words), dtype=np.uint64)
            _kernels.binary(x, layer.weights, layer.thresholds, b * n, layer.groups, layer.words, layer.out_words, y,
                            use_avx512)
            x = y
            record(trace, x.reshape(b, n, -1))
        pooled = np.empty((b, self.pool.out_words), dtype=np.uint64)
        _kernels.pool(x, self.pool.weights, self.pool_thresholds(n), b, n, self.pool.groups, self.pool.words,
                      self.pool.out_words, pooled, use_avx512)
        x = pooled
        record(trace, x)
        for layer in self.head_layers:
            y = np.empty((b, layer.out_words), dtype=np.uint64)
            _kernels.binary(x, layer.weights, layer.thresholds, b, layer.groups, layer.words, layer.out_words, y,
                            use_avx512)
            x = y
            record(trace, x)
        last = self.float_layer
        counts = np.empty((b, last.layer.outputs), dtype=np.int32)
        _kernels.counts(x, last.weights, b, last.groups, last.words, last.layer.outputs, counts)
        h = reference.float_output(counts, last.layer)
        record(trace, h)
        return reference.classify(h, self.network.layers[-1])
