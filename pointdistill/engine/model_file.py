"""The exported binary network file (``.pdbn``, versions 1 to 4): a plain binary layout, no pickle.

    offset 0   magic    b"PDBN"
    offset 4   uint32   format version, little-endian: the highest its layers need (4 with an
                        ``input_threshold``, 3 with ``binary_pool_real`` or a narrowing ``binary_shortcut``,
                        2 with ``stem_real`` or ``binary_shortcut``, else 1), so that older readers go on
                        reading what they can
    offset 8   uint64   H: length of the JSON header in bytes, little-endian
    offset 16  H bytes  JSON header (UTF-8)
    then       payload  zero-padded so it starts at a multiple of 64 bytes from the file start;
                        every tensor at a multiple of 64 bytes into the payload, little-endian,
                        C order

The header holds ``num_classes``, ``class_names``, ``aggregation``, ``source`` (the student
checkpoint's spec and weights sha256), ``payload_bytes``, ``payload_sha256`` and ``layers``, in
order; every layer has ``kind``, ``in``, ``out`` and ``tensors`` (name -> {offset, dtype, shape}):

- ``stem`` (float, points -> bits): weight float32 [M, 3], scale, offset float32 [M];
  output bit m = (scale[m] * (weight[m] . p) + offset[m] >= 0).
- ``binary`` (bits -> bits): bits uint64 [M, ceil(K / 64)] (input channel k at bit k % 64 of
  word k // 64, 1 = +1, padding bits 0), threshold int32 [M]; output bit m = (popcount(x XOR
  bits[m]) <= threshold[m]), i.e. BatchNorm(scale * (x . w_m)) >= 0 with the sign of a negative
  scale moved into the weight bits.
- ``binary_pool`` (bits per point -> bits per cloud): bits as above, scale (> 0), offset float32
  [M]; output bit m = OR over points of (scale[m] * dot + offset[m] + delta_N >= 0), the sign of
  max-pooling (delta_N = 0) or EMA pooling (delta_N = -Phi^-1(0.5^(1/N))) for N points, whose
  integer threshold the engine computes for each N.
- ``binary_float`` (bits -> float, the layer before the classifier): bits, scale, offset
  float32 [M]; output clip(scale * dot + offset, -1, 1) (Hardtanh).
- ``linear`` (float): weight float32 [C, M], bias float32 [C].

Real-valued shortcuts (version 2) replace the stem and the point layers before ``binary_pool``:

- ``stem_real`` (float, points -> real per point): tensors as ``stem``; output
  clip(scale[m] * ((wx px + wy py) + wz pz) + offset[m], -1, 1), float32 in that order.
- ``binary_shortcut`` (real per point -> real per point, M a multiple of K): bits, scale,
  offset as ``binary_float``, over the input's signs (bit k = x[k] >= 0); output
  y[m] = x[m % K] + clip(scale[m] * dot + offset[m], -1, 1), float32 in that order.
- ``binary_pool`` after them reads the signs of the last layer's output.

Real-valued head shortcuts (version 3) replace ``binary_pool`` and the head's layers:

- ``binary_pool_real`` (bits per point -> real per cloud): bits, scale (>= 0), offset float32 [M];
  output y[m] = scale[m] * (K - 2 P[m]) + offset_N[m], P[m] the least popcount over the points (the
  largest pre-activation: max-pooling; EMA pooling adds delta_N) and offset_N = offset + delta_N
  rounded to float32 (the engine computes it for each N, as the thresholds above).
- ``binary_shortcut`` layers after it, per cloud, the last giving the classifier's input; M may also
  be a divisor of K (version 3): then x's channels are averaged in groups, y[m] = (x[m] + x[m + M] +
  ... + x[m + (K / M - 1) M]) / (K / M) + clip(scale[m] * dot + offset[m], -1, 1), summed left to
  right in float32.

Learned input thresholds (version 4): a layer that reads real values (``binary_shortcut``, and the
pooled layer after ``stem_real`` / ``binary_shortcut``) may hold ``input_threshold`` float32 [K]; it
then reads bit k = (x[k] >= input_threshold[k]) instead of the sign (x itself goes on unchanged into
the shortcut).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pointdistill.storage import write_bytes_atomically

MAGIC = b"PDBN"
VERSIONS = (1, 2, 3, 4)  # the format versions this pointdistill reads
FORMAT_NAME = "pointdistill.binary-network"
ALIGN = 64
LAYER_TENSORS: dict[str, dict[str, str]] = {
    "stem": {"weight": "float32", "scale": "float32", "offset": "float32"},
    "stem_real": {"weight": "float32", "scale": "float32", "offset": "float32"},
    "binary": {"bits": "uint64", "threshold": "int32"},
    "binary_shortcut": {"bits": "uint64", "scale": "float32", "offset": "float32"},
    "binary_pool": {"bits": "uint64", "scale": "float32", "offset": "float32"},
    "binary_pool_real": {"bits": "uint64", "scale": "float32", "offset": "float32"},
    "binary_float": {"bits": "uint64", "scale": "float32", "offset": "float32"},
    "linear": {"weight": "float32", "bias": "float32"},
}
# optional tensors: the threshold a layer reading real values takes its input bits at (else 0)
OPTIONAL_TENSORS = {kind: {"input_threshold": "float32"} for kind in ("binary_shortcut", "binary_pool", "binary_pool_real")}
KIND_VERSIONS = {"stem_real": 2, "binary_shortcut": 2, "binary_pool_real": 3}  # the version a kind needs (else 1)
NARROWING_VERSION = 3  # the version a binary_shortcut with fewer outputs than inputs needs
THRESHOLD_VERSION = 4  # the version a layer with an input_threshold needs
REAL_OUTPUT_KINDS = ("stem_real", "binary_shortcut", "binary_pool_real")  # layers whose outputs are real values
POINT_LAYER_KINDS = {"stem": "binary", "stem_real": "binary_shortcut"}  # stem kind -> its point layers' kind
POOL_KINDS = ("binary_pool", "binary_pool_real")  # the pooled layer's kinds: signs, real values


class ModelFileError(ValueError):
    """An exported model file is truncated, damaged, of another version or inconsistent."""


def words(bits: int) -> int:
    """64-bit words holding ``bits`` bits."""
    return -(-bits // 64)


@dataclass
class Layer:
    kind: str
    inputs: int
    outputs: int
    tensors: dict[str, np.ndarray]

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        m, k = self.outputs, self.inputs
        if self.kind in POINT_LAYER_KINDS:
            return {"weight": (m, 3), "scale": (m,), "offset": (m,)}
        if self.kind == "linear":
            return {"weight": (m, k), "bias": (m,)}
        shapes = {"bits": (m, words(k))}
        if self.kind == "binary":
            return {**shapes, "threshold": (m,)}
        return {**shapes, "scale": (m,), "offset": (m,)}

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """expected_shapes and, where the layer holds them, its optional tensors' shapes."""
        optional = {name: (self.inputs,) for name in OPTIONAL_TENSORS.get(self.kind, {}) if name in self.tensors}
        return {**self.expected_shapes(), **optional}


def tensor_dtype(kind: str, name: str) -> str | None:
    """The dtype a layer kind's tensor is stored as (None: no such tensor)."""
    return LAYER_TENSORS[kind].get(name) or OPTIONAL_TENSORS.get(kind, {}).get(name)


@dataclass
class BinaryNetwork:
    """An exported binary PointNet: stem, binary point layers ending in ``binary_pool``, binary
    head layers ending in ``binary_float``, then ``linear``; with shortcuts, ``stem_real`` and
    ``binary_shortcut`` point layers; with head shortcuts, ``binary_pool_real`` and ``binary_shortcut``
    head layers (the last one's output the classifier's input)."""

    layers: list[Layer]
    class_names: list[str]
    aggregation: str
    source: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return self.layers[-1].outputs

    def validate(self, where: str = "model") -> None:
        """Raise ModelFileError unless the layers form a runnable network."""
        kinds = [layer.kind for layer in self.layers]
        if not _layer_sequence_runs(kinds):
            raise ModelFileError(f"{where}: layer sequence {kinds} is not stem, binary..., binary_pool, binary..., "
                                 f"binary_float, linear, or the same with stem_real, binary_shortcut... before "
                                 f"the pooled layer, or with binary_pool_real, binary_shortcut... (at least one), "
                                 f"linear after the point layers")
        if self.layers[0].inputs != 3:
            raise ModelFileError(f"{where}: stem takes {self.layers[0].inputs} inputs per point, expected 3")
        for index, layer in enumerate(self.layers):
            name = f"{where}: layer {index} ({layer.kind})"
            if index and layer.inputs != self.layers[index - 1].outputs:
                raise ModelFileError(f"{name} takes {layer.inputs} inputs but layer {index - 1} gives "
                                     f"{self.layers[index - 1].outputs}")
            expected = layer.tensor_shapes()
            if set(layer.tensors) != set(expected):
                optional = sorted(OPTIONAL_TENSORS.get(layer.kind, {}))
                raise ModelFileError(f"{name}: tensors {sorted(layer.tensors)}, expected {sorted(layer.expected_shapes())}"
                                     + (f" (optionally {', '.join(optional)})" if optional else ""))
            if "input_threshold" in layer.tensors and self.layers[index - 1].kind not in REAL_OUTPUT_KINDS:
                raise ModelFileError(f"{name}: input_threshold on a layer whose input is bits, not real values "
                                     f"(layer {index - 1} is {self.layers[index - 1].kind})")
            for tensor_name, shape in expected.items():
                tensor = layer.tensors[tensor_name]
                if tensor.shape != shape or tensor.dtype != np.dtype(tensor_dtype(layer.kind, tensor_name)):
                    raise ModelFileError(f"{name}: {tensor_name} is {tensor.dtype} {list(tensor.shape)}, expected "
                                         f"{tensor_dtype(layer.kind, tensor_name)} {list(shape)}")
                if tensor.dtype.kind == "f" and not np.isfinite(tensor).all():
                    raise ModelFileError(f"{name}: {tensor_name} holds {int((~np.isfinite(tensor)).sum())} "
                                         f"non-finite values (NaN or inf)")
            if "bits" in layer.tensors and layer.inputs % 64:
                padding = np.uint64(~((1 << (layer.inputs % 64)) - 1) & 0xFFFFFFFFFFFFFFFF)
                if (layer.tensors["bits"][:, -1] & padding).any():
                    raise ModelFileError(f"{name}: padding bits beyond input {layer.inputs} are not zero")
            if layer.kind == "binary_shortcut" and layer.outputs % layer.inputs and layer.inputs % layer.outputs:
                raise ModelFileError(f"{name}: {layer.outputs} outputs are neither a multiple nor a divisor of its "
                                     f"{layer.inputs} inputs (the shortcut repeats its input or averages it in groups)")
            if layer.kind == "binary_pool" and not (layer.tensors["scale"] > 0).all():
                raise ModelFileError(f"{name}: scale must be > 0 (negative scales are folded into the bits)")
            if layer.kind == "binary_pool_real" and not (layer.tensors["scale"] >= 0).all():
                raise ModelFileError(f"{name}: scale must be >= 0 (negative scales are folded into the bits)")
        if len(self.class_names) != self.num_classes:
            raise ModelFileError(f"{where}: {len(self.class_names)} class names for {self.num_classes} outputs")
        if self.aggregation not in ("max", "ema"):
            raise ModelFileError(f"{where}: unknown aggregation {self.aggregation!r}")

    @property
    def version(self) -> int:
        """The file format version that holds these layers: the highest their kinds need."""
        return max(THRESHOLD_VERSION if "input_threshold" in layer.tensors
                   else NARROWING_VERSION if layer.kind == "binary_shortcut" and layer.outputs < layer.inputs
                   else KIND_VERSIONS.get(layer.kind, 1) for layer in self.layers)


def _layer_sequence_runs(kinds: list[str]) -> bool:
    """Whether the engine runs this sequence of layer kinds (BinaryNetwork's docstring)."""
    point_kind = POINT_LAYER_KINDS.get(kinds[0]) if kinds else None
    pools = [i for i, kind in enumerate(kinds) if kind in POOL_KINDS]
    if point_kind is None or len(pools) != 1 or kinds[-1] != "linear":
        return False
    pool = pools[0]
    head = kinds[pool + 1:-1]
    head_kinds = (["binary_shortcut"] * len(head) if kinds[pool] == "binary_pool_real"
                  else ["binary"] * (len(head) - 1) + ["binary_float"])
    return all(kind == point_kind for kind in kinds[1:pool]) and len(head) >= 1 and head == head_kinds


def encode_network(network: BinaryNetwork, where: str = "network") -> bytes:
    """The model file's bytes for ``network`` (validated first; ``where`` names it in errors)."""
    network.validate(where)
    version = network.version
    payload, layers = bytearray(), []
    for layer in network.layers:
        entries = {}
        for name, tensor in layer.tensors.items():
            payload += b"\0" * (-len(payload) % ALIGN)
            data = np.ascontiguousarray(tensor, dtype=tensor.dtype.newbyteorder("<"))
            entries[name] = {"offset": len(payload), "dtype": tensor_dtype(layer.kind, name),
                             "shape": list(tensor.shape)}
            payload += data.tobytes()
        layers.append({"kind": layer.kind, "in": layer.inputs, "out": layer.outputs, "tensors": entries})
    header = json.dumps({
        "format": FORMAT_NAME, "version": version, "num_classes": network.num_classes,
        "class_names": list(network.class_names), "aggregation": network.aggregation, "source": network.source,
        "layers": layers, "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }).encode()
    start = 16 + len(header)
    return MAGIC + struct.pack("<IQ", version, len(header)) + header + b"\0" * (-start % ALIGN) + bytes(payload)


def save_network(path: str | os.PathLike, network: BinaryNetwork) -> int:
    """Write ``network`` atomically (a partial file never stands at ``path``); returns its size in bytes."""
    blob = encode_network(network, str(path))
    write_bytes_atomically(path, blob)
    return len(blob)


def load_network(path: str | os.PathLike) -> BinaryNetwork:
    """Read and validate an exported network; ModelFileError names the file and what is wrong."""
    try:
        blob = Path(path).read_bytes()
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read model file ({error})") from error
    if len(blob) < 16 or blob[:4] != MAGIC:
        hint = ("; it looks like a PyTorch checkpoint: make the model file with "
                f"`pointdistill export {path} -o MODEL.pdbn`" if blob[:2] == b"PK" else "")
        raise ModelFileError(f"{path}: not a pointdistill binary network (.pdbn) file{hint}")
    version, header_length = struct.unpack_from("<IQ", blob, 4)
    if version not in VERSIONS:
        raise ModelFileError(f"{path}: model file version {version}; this pointdistill reads versions "
                             f"{', '.join(map(str, VERSIONS))}")
    if 16 + header_length > len(blob):
        raise ModelFileError(f"{path}: truncated ({len(blob)} bytes, header alone needs {16 + header_length})")
    try:
        header = json.loads(blob[16:16 + header_length])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ModelFileError(f"{path}: damaged header ({type(error).__name__}: {error})") from error
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: damaged header (a JSON {type(header).__name__}, not an object)")
    start = 16 + header_length + (-(16 + header_length) % ALIGN)
    payload = blob[start:]
    if len(payload) != header.get("payload_bytes"):
        raise ModelFileError(f"{path}: truncated or padded: payload is {len(payload)} bytes, header says "
                             f"{header.get('payload_bytes')}")
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise ModelFileError(f"{path}: payload checksum mismatch (the file is damaged)")
    layers = []
    try:
        for index, entry in enumerate(header["layers"]):
            kind = entry["kind"]
            if kind not in LAYER_TENSORS:
                raise ModelFileError(f"{path}: layer {index} has unknown kind {kind!r}")
            tensors = {}
            for name, spec in entry["tensors"].items():
                dtype = np.dtype(tensor_dtype(kind, name) or spec["dtype"]).newbyteorder("<")
                count = int(np.prod(spec["shape"], dtype=np.int64))
                end = spec["offset"] + count * dtype.itemsize
                if spec["offset"] < 0 or end > len(payload):
                    raise ModelFileError(f"{path}: layer {index} tensor {name} lies outside the payload")
                tensors[name] = np.frombuffer(payload, dtype, count, spec["offset"]).reshape(
                    spec["shape"]).astype(dtype.newbyteorder("="))
            layers.append(Layer(kind, int(entry["in"]), int(entry["out"]), tensors))
        network = BinaryNetwork(layers, list(header["class_names"]), header["aggregation"], header.get("source", {}))
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as error:
        if isinstance(error, ModelFileError):
            raise
        raise ModelFileError(f"{path}: malformed header ({type(error).__name__}: {error})") from error
    network.validate(str(path))
    if network.version > version:
        raise ModelFileError(f"{path}: layer kinds of format version {network.version} in a version {version} file")
    return network
