"""The NumPy reference engine: exact and simple, the oracle for the compiled kernels.

Bits are packed as in the model file: channel k at bit k % 64 of word k // 64, 1 = +1.
"""

from __future__ import annotations

import numpy as np

from pointdistill.engine.export import pack_bits, pool_real_offsets, pool_thresholds
from pointdistill.engine.model_file import BinaryNetwork, Layer

ROWS_PER_BLOCK = 256  # bounds the [rows, M, words] XOR temporary


def stem_values(layer: Layer, points: np.ndarray) -> np.ndarray:
    """float32 [R, 3] -> float32 [R, M]: scale * (W p) + offset, with the product summed as
    (wx px + wy py) + wz pz in float32 (the kernels' order, bit for bit)."""
    t = layer.tensors
    p, w = points.astype(np.float32), t["weight"]
    z = (p[:, 0:1] * w[:, 0] + p[:, 1:2] * w[:, 1]) + p[:, 2:3] * w[:, 2]  # [R, M]
    return t["scale"] * z + t["offset"]


def stem_bits(layer: Layer, points: np.ndarray) -> np.ndarray:
    """float32 [R, 3] -> uint64 [R, ceil(M / 64)]: the signs of stem_values."""
    return pack_bits(stem_values(layer, points) >= 0)


def matched_values(x: np.ndarray, width: int) -> np.ndarray:
    """float32 [R, K] -> [R, width]: x repeated width / K times along channels, or (width a divisor of
    K) its channels m, m + width, ... summed left to right and divided by K / width, in float32."""
    k = x.shape[1]
    if width >= k:
        return np.tile(x, width // k)
    total = x[:, :width].copy()
    for start in range(width, k, width):
        total += x[:, start:start + width]
    return total / np.float32(k // width)


def read_bits(x: np.ndarray, layer: Layer | None) -> np.ndarray:
    """float32 [R, K] -> uint64 [R, words]: the bits ``layer`` reads of real values, x >= its
    input_threshold (0 where it has none, or where ``layer`` is None: the signs)."""
    threshold = np.float32(0) if layer is None else layer.tensors.get("input_threshold", np.float32(0))
    return pack_bits(x >= threshold)


def shortcut_values(x: np.ndarray, x_bits: np.ndarray, layer: Layer) -> np.ndarray:
    """A ``binary_shortcut`` layer: float32 [R, K] and the bits it reads of them (read_bits(x, layer))
    -> [R, M]: matched_values(x, M) plus Hardtanh(scale * dot + offset), dot = K - 2 popcount(x_bits XOR w)."""
    return matched_values(x, layer.outputs) + float_output(popcounts(x_bits, layer.tensors["bits"]), layer)


def popcounts(x: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """uint64 [R, Kw] against [M, Kw] -> int32 [R, M]: popcount(x XOR w) per row and channel."""
    out = np.empty((x.shape[0], bits.shape[0]), dtype=np.int32)
    for start in range(0, x.shape[0], ROWS_PER_BLOCK):
        block = x[start:start + ROWS_PER_BLOCK, None, :] ^ bits[None]
        out[start:start + ROWS_PER_BLOCK] = np.bitwise_count(block).sum(axis=2, dtype=np.int32)
    return out


def binary_bits(x: np.ndarray, bits: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """uint64 [R, Kw] -> uint64 [R, ceil(M / 64)]: bit m = popcount(x XOR w_m) <= threshold[m]."""
    return pack_bits(popcounts(x, bits) <= threshold)


def pool_bits(x: np.ndarray, bits: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """uint64 [B, N, Kw] -> uint64 [B, ceil(M / 64)]: OR over the N points of the output bits."""
    b, n, kw = x.shape
    fired = popcounts(x.reshape(b * n, kw), bits).reshape(b, n, -1).min(axis=1) <= threshold
    return pack_bits(fired)


def pool_real_values(x: np.ndarray, layer: Layer, aggregation: str) -> np.ndarray:
    """A ``binary_pool_real`` layer: uint64 [B, N, Kw] -> float32 [B, M]: scale * (K - 2 P) +
    offset_N, P the least popcount over the N points."""
    b, n, kw = x.shape
    least = popcounts(x.reshape(b * n, kw), layer.tensors["bits"]).reshape(b, n, -1).min(axis=1)
    dot = (layer.inputs - 2 * least).astype(np.float32)
    return layer.tensors["scale"] * dot + pool_real_offsets(layer, aggregation, n)


def float_output(counts: np.ndarray, layer: Layer) -> np.ndarray:
    """popcounts int32 [R, M] of a ``binary_float`` or ``binary_shortcut`` layer -> float32 [R, M]:
    Hardtanh(scale * dot + offset), dot = K - 2 popcount."""
    dot = (layer.inputs - 2 * counts).astype(np.float32)
    return np.clip(layer.tensors["scale"] * dot + layer.tensors["offset"], -1, 1)


def classify(h: np.ndarray, layer: Layer) -> np.ndarray:
    """float32 [B, M] -> logits float32 [B, C] through the ``linear`` layer."""
    return h @ layer.tensors["weight"].T + layer.tensors["bias"]


def checked_points(points: np.ndarray) -> np.ndarray:
    """``points`` as contiguous float32 [B, N, 3] with N >= 1, else ValueError."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    if points.ndim != 3 or points.shape[2] != 3 or points.shape[1] < 1:
        raise ValueError(f"points must be float32 [B, N, 3] with N >= 1, got shape {list(points.shape)}")
    return points


def forward(network: BinaryNetwork, points: np.ndarray, trace: list | None = None) -> np.ndarray:
    """float32 [B, N, 3] -> logits float32 [B, C]. ``trace`` (a list) receives every layer's output."""
    points = checked_points(points)
    b, n, _ = points.shape
    layers = network.layers
    if layers[0].kind == "stem_real":  # real-valued shortcuts: the trace holds the bits each real output is read as
        index = next(i for i in range(1, len(layers)) if layers[i].kind != "binary_shortcut")
        stem = np.clip(stem_values(layers[0], points.reshape(b * n, 3)), -1, 1)
        _, x = shortcut_chain(stem, layers[1:index + 1], (b, n), trace)
    else:
        index = 1
        x = stem_bits(layers[0], points.reshape(b * n, 3))
        record(trace, x.reshape(b, n, -1))
    while layers[index].kind == "binary":
        x = binary_bits(x, layers[index].tensors["bits"], layers[index].tensors["threshold"])
        record(trace, x.reshape(b, n, -1))
        index += 1
    pool = layers[index]
    if pool.kind == "binary_pool_real":  # head shortcuts: the trace holds the bits each real output is read as
        h, _ = shortcut_chain(pool_real_values(x.reshape(b, n, -1), pool, network.aggregation),
                              layers[index + 1:-1] + [None], (b,), trace)
        record(trace, h)
        return classify(h, layers[-1])
    x = pool_bits(x.reshape(b, n, -1), pool.tensors["bits"], pool_thresholds(pool, network.aggregation, n))
    record(trace, x)
    index += 1
    while layers[index].kind == "binary":
        x = binary_bits(x, layers[index].tensors["bits"], layers[index].tensors["threshold"])
        record(trace, x)
        index += 1
    h = float_output(popcounts(x, layers[index].tensors["bits"]), layers[index])
    record(trace, h)
    return classify(h, layers[index + 1])


def shortcut_chain(real: np.ndarray, layers: list[Layer | None], shape: tuple[int, ...],
                   trace: list | None) -> tuple[np.ndarray, np.ndarray]:
    """float32 [R, K] through ``layers[:-1]`` (each ``binary_shortcut``) -> (float32 [R, M], the bits
    ``layers[-1]`` reads of it (read_bits; the signs where it is None: no layer reads it), uint64
    [R, words]). ``trace`` receives the bits of the input and of each layer's output that the layer
    after it reads, packed, as uint64 [*shape, words] (R = prod(shape))."""
    bits = read_bits(real, layers[0])
    record(trace, bits.reshape(*shape, -1))
    for layer, reader in zip(layers[:-1], layers[1:]):
        real = shortcut_values(real, bits, layer)
        bits = read_bits(real, reader)
        record(trace, bits.reshape(*shape, -1))
    return real, bits


def record(trace: list | None, value: np.ndarray) -> None:
    """Append ``value`` to ``trace`` unless it is None."""
    if trace is not None:
        trace.append(value)
