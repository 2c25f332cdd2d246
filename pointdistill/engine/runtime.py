"""Running an exported network with the compiled kernels.

Kernel choice: ``POINTDISTILL_ENGINE_KERNEL`` = ``auto`` (default: the fastest path this CPU
runs), one of the compiled paths (``avx512``: AVX-512 VPOPCNTDQ; ``avx2``: AVX2 nibble-lookup
popcount; ``neon``: ARM64 Advanced SIMD; ``scalar``: x86-64 POPCNT; ``generic``: plain C, no
popcount instruction) or ``numpy`` (the reference engine). A path this build or CPU cannot run is
refused with the list of those it can. Without the compiled extension, ``auto`` falls back to
``numpy`` with a warning.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

from pointdistill.engine import reference
from pointdistill.engine.reference import record
from pointdistill.engine.export import pool_real_offsets, pool_thresholds
from pointdistill.engine.model_file import POOL_KINDS, BinaryNetwork, Layer, words

KERNEL_ENV = "POINTDISTILL_ENGINE_KERNEL"
FASTEST_FIRST = ("avx512", "avx2", "neon", "scalar", "generic")  # every compiled path, in preference order
KERNELS = ("auto", *FASTEST_FIRST, "numpy")

try:
    from pointdistill.engine import _kernels
except ImportError:  # built without a C compiler
    _kernels = None

# name -> (path code, compiled into this build, runnable on this CPU)
_PATHS = {name: (code, compiled, runnable)
          for code, (name, compiled, runnable) in enumerate(_kernels.kernel_paths() if _kernels else ())}


def available_kernels() -> list[str]:
    """Kernels this machine can run, fastest first (``numpy`` last)."""
    return [name for name in FASTEST_FIRST if _PATHS.get(name, (0, False, False))[2]] + ["numpy"]


def kernel_info() -> dict:
    """What the engine sees: CPU features, each path's state and the kernel ``auto`` picks."""
    paths = {name: ("runs here" if runnable else "compiled, this CPU lacks its instructions" if compiled
                    else "not built for this architecture") for name, (_, compiled, runnable) in _PATHS.items()}
    return {"cpu_features": _kernels.cpu_features() if _kernels else {},
            "paths": paths or {"(compiled kernels)": "not built"},
            "auto": available_kernels()[0]}


def path_code(kernel: str) -> int:
    """The compiled kernels' code for a path name (``avx2``, ...), as Plan.forward and pool take it."""
    return _PATHS[kernel][0]


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


def pooled_layer_index(network: BinaryNetwork) -> int:
    return next(i for i, layer in enumerate(network.layers) if layer.kind in POOL_KINDS)


def interleave(bits: np.ndarray) -> np.ndarray:
    """uint64 [M, Kw] -> [ceil(M / 8), Kw, 8]: word j of output channels 8g..8g+7 side by side,
    padding channels all zero."""
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


# layer kind -> the float tensors its kernels take (before K and M), for the layers with real outputs
REAL_TENSORS = {"binary_shortcut": ("scale", "offset"), "binary_pool_real": ("scale",)}


@dataclass(frozen=True)
class PackedLayer:
    """A binary layer in the kernels' layout: weights uint64 [groups, words, 8], thresholds int64
    [groups * 8] (None for the pooled layer: they depend on the point count; None for a layer with
    real outputs, which has ``real``: (scale float32 [M], offset float32 [M], K, M) for a shortcut
    layer, (scale, K, M) for a real-valued pooled layer, whose offsets depend on the point count)."""

    weights: np.ndarray
    thresholds: np.ndarray | None
    out_words: int
    real: tuple | None = None

    @classmethod
    def of(cls, layer: Layer) -> PackedLayer:
        t = layer.tensors
        thresholds = padded_thresholds(t["threshold"]) if "threshold" in t else None
        real_names = REAL_TENSORS.get(layer.kind)
        real = None if real_names is None else (
            *(np.ascontiguousarray(t[name], dtype=np.float32) for name in real_names), layer.inputs, layer.outputs)
        return cls(interleave(t["bits"]), thresholds, words(layer.outputs), real)

    def spec(self) -> tuple:
        """(weights, thresholds, groups, words, out_words[, real...]), as the kernels' Plan takes it."""
        return (self.weights, self.thresholds, self.weights.shape[0], self.weights.shape[1], self.out_words,
                *(self.real or ()))


@dataclass(frozen=True)
class PackedNetwork:
    """An exported network in the kernels' layout, up to the classifier's input: its float hidden
    layer (``last``), or with head shortcuts its last head layer (``last`` is then ())."""

    stem: tuple  # (weight float32 [3, M16], scale [M16], offset [M16] (padding: -1, bit 0), M16, out_words[, M
    #               for a stem_real, whose M real values per point the shortcut layers take])
    point_layers: tuple[PackedLayer, ...]
    pool: PackedLayer
    head_layers: tuple[PackedLayer, ...]
    last: tuple  # (weights, groups, words, outputs, inputs, scale float32 [outputs], offset), or ()
    classifier_inputs: int  # the width of h, the classifier's input
    # per layer output (stem, point layers, pooled, head layers): the thresholds float32 [outputs] the next
    # layer reads those real values at (its input_threshold), or None (0: the signs; or bits, not real values)
    read_at: tuple

    @classmethod
    def of(cls, network: BinaryNetwork) -> PackedNetwork:
        layers = network.layers
        stem, m = layers[0].tensors, layers[0].outputs
        m16 = -(-m // 16) * 16
        weight = np.zeros((3, m16), dtype=np.float32)
        weight[:, :m] = stem["weight"].T
        scale = np.zeros(m16, dtype=np.float32)
        scale[:m] = stem["scale"]
        offset = np.full(m16, -1, dtype=np.float32)
        offset[:m] = stem["offset"]
        pool = pooled_layer_index(network)
        last, last_spec = layers[-2], ()
        if last.kind == "binary_float":
            last_weights = interleave(last.tensors["bits"])
            last_spec = (last_weights, last_weights.shape[0], last_weights.shape[1], last.outputs, last.inputs,
                         np.ascontiguousarray(last.tensors["scale"], dtype=np.float32),
                         np.ascontiguousarray(last.tensors["offset"], dtype=np.float32))
        return cls(
            stem=(weight, scale, offset, m16, words(m), *((m,) if layers[0].kind == "stem_real" else ())),
            point_layers=tuple(PackedLayer.of(layer) for layer in layers[1:pool]),
            pool=PackedLayer.of(layers[pool]),
            head_layers=tuple(PackedLayer.of(layer) for layer in layers[pool + 1:-2 if last_spec else -1]),
            last=last_spec,
            classifier_inputs=last.outputs,
            read_at=tuple(None if "input_threshold" not in reader.tensors
                          else np.ascontiguousarray(reader.tensors["input_threshold"], dtype=np.float32)
                          for reader in layers[1:len(layers) - (1 if last_spec else 0)]))

    def plan(self):
        """The kernels' Plan (checks every size once and keeps the arrays alive)."""
        pool = self.pool.spec()
        return _kernels.Plan(self.stem, tuple(layer.spec() for layer in self.point_layers), pool,
                             tuple(layer.spec() for layer in self.head_layers), self.last, self.read_at)

    def trace_buffers(self, clouds: int, num_points: int) -> tuple[np.ndarray, ...]:
        """One uint64 array per layer output: [clouds, N, words] per point layer (the stem first; where
        the network has shortcuts, the bits the next layer reads of its real values: their signs, or
        x >= t with learned thresholds), [clouds, words] for the pooled and head layers."""
        per_point = [self.stem[4], *(layer.out_words for layer in self.point_layers)]
        per_cloud = [self.pool.out_words, *(layer.out_words for layer in self.head_layers)]
        return (tuple(np.zeros((clouds, num_points, w), dtype=np.uint64) for w in per_point)
                + tuple(np.zeros((clouds, w), dtype=np.uint64) for w in per_cloud))


class Engine:
    """An exported network ready to run: ``engine(points)`` -> logits."""

    def __init__(self, network: BinaryNetwork, kernel: str | None = None):
        self.network = network
        self.kernel = resolve_kernel(kernel)
        self.packed = PackedNetwork.of(network)
        self._plan = self.packed.plan() if self.kernel != "numpy" else None
        self._pool_arguments: dict[int, np.ndarray] = {}

    @property
    def class_names(self) -> list[str]:
        return list(self.network.class_names)

    def pool_argument(self, num_points: int) -> np.ndarray:
        """The pooled layer's per-point-count values, as Plan.forward takes them: thresholds int64
        [groups * 8], or for a real-valued pooled layer its offsets float32 [M], for clouds of
        ``num_points`` points."""
        if num_points not in self._pool_arguments:
            pool = self.network.layers[pooled_layer_index(self.network)]
            self._pool_arguments[num_points] = (
                pool_real_offsets(pool, self.network.aggregation, num_points) if pool.kind == "binary_pool_real"
                else padded_thresholds(pool_thresholds(pool, self.network.aggregation, num_points)))
        return self._pool_arguments[num_points]

    def __call__(self, points: np.ndarray, trace: list | None = None) -> np.ndarray:
        """float32 [B, N, 3] -> logits float32 [B, C]; ``trace`` (a list) receives every layer's output
        (packed bits [B, N, words] per point layer (with shortcuts, the bits the next layer reads of the
        real values), [B, words]
        after pooling, float before the classifier).
        One call into the kernels runs every layer up to the float hidden layer, cloud by cloud."""
        if self.kernel == "numpy":
            return reference.forward(self.network, points, trace)
        points = reference.checked_points(points)
        b, n, _ = points.shape
        h = np.empty((b, self.packed.classifier_inputs), dtype=np.float32)
        buffers = self.packed.trace_buffers(b, n) if trace is not None else None
        self._plan.forward(path_code(self.kernel), points, b, n, self.pool_argument(n), h, buffers)
        for bits in buffers or ():
            record(trace, bits)
        record(trace, h)
        return reference.classify(h, self.network.layers[-1])
