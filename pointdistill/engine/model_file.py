"""The exported binary network file (``.pdbn``, versions 1 and 2): a plain binary layout, no pickle.

    offset 0   magic    b"PDBN"
    offset 4   uint32   format version, little-endian: 2 where a layer kind of version 2 occurs
                        (``stem_real``, ``binary_shortcut``), else 1 (what readers before version 2 read)
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
VERSIONS = (1, 2)  # the format versions this pointdistill reads
FORMAT_NAME = "pointdistill.binary-network"
ALIGN = 64
LAYER_TENSORS: dict[str, dict[str, str]] = {
    "stem": {"weight": "float32", "scale": "float32", "offset": "float32"},
    "stem_real": {"weight": "float32", "scale": "float32", "offset": "float32"},
    "binary": {"bits": "uint64", "threshold": "int32"},
    "binary_shortcut": {"bits": "uint64", "scale": "float32", "offset": "float32"},
    "binary_pool": {"bits": "uint64", "scale": "float32", "offset": "float32"},
    "binary_float": {"bits": "uint64", "scale": "float32", "offset": "float32"},
    "linear": {"weight": "float32", "bias": "float32"},
}
KIND_VERSIONS = {"stem_real": 2, "binary_shortcut": 2}  # the format version a layer kind needs (else 1)
POINT_LAYER_KINDS = {"stem": "binary", "stem_real": "binary_shortcut"}  # stem kind -> its point layers' kind


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


@dataclass
class BinaryNetwork:
    """An exported binary PointNet: stem, binary point layers ending in ``binary_pool``, binary
    head layers ending in ``binary_float``, then ``linear``; with shortcuts, ``stem_real`` and
    ``binary_shortcut`` point layers."""

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
        point_kind = POINT_LAYER_KINDS.get(kinds[0]) if kinds else None
        if (len(kinds) < 4 or point_kind is None or kinds[-1] != "linear" or kinds[-2] != "binary_float"
                or kinds.count("binary_pool") != 1
                or any(k != point_kind for k in kinds[1:kinds.index("binary_pool")])
                or any(k != "binary" for k in kinds[kinds.index("binary_pool") + 1:-2])):
            raise ModelFileError(f"{where}: layer sequence {kinds} is not stem, binary..., binary_pool, binary..., "
                                 f"binary_float, linear, or the same with stem_real, binary_shortcut... before "
                                 f"binary_pool")
        if self.layers[0].inputs != 3:
            raise ModelFileError(f"{where}: stem takes {self.layers[0].inputs} inputs per point, expected 3")
        for index, layer in enumerate(self.layers):
            name = f"{where}: layer {index} ({layer.kind})"
            if index and layer.inputs != self.layers[index - 1].outputs:
                raise ModelFileError(f"{name} takes {layer.inputs} inputs but layer {index - 1} gives "
                                     f"{self.layers[index - 1].outputs}")
            expected = layer.expected_shapes()
            if set(layer.tensors) != set(expected):
                raise ModelFileError(f"{name}: tensors {sorted(layer.tensors)}, expected {sorted(expected)}")
            for tensor_name, shape in expected.items():
                tensor = layer.tensors[tensor_name]
                if tensor.shape != shape or tensor.dtype != np.dtype(LAYER_TENSORS[layer.kind][tensor_name]):
                    raise ModelFileError(f"{name}: {tensor_name} is {tensor.dtype} {list(tensor.shape)}, expected "
                                         f"{LAYER_TENSORS[layer.kind][tensor_name]} {list(shape)}")
                if tensor.dtype.kind == "f" and not np.isfinite(tensor).all():
                    raise ModelFileError(f"{name}: {tensor_name} holds {int((~np.isfinite(tensor)).sum())} "
                                         f"non-finite values (NaN or inf)")
            if "bits" in layer.tensors and layer.inputs % 64:
                padding = np.uint64(~((1 << (layer.inputs % 64)) - 1) & 0xFFFFFFFFFFFFFFFF)
                if (layer.tensors["bits"][:, -1] & padding).any():
                    raise ModelFileError(f"{name}: padding bits beyond input {layer.inputs} are not zero")
            if layer.kind == "binary_shortcut" and layer.outputs % layer.inputs:
                raise ModelFileError(f"{name}: {layer.outputs} outputs are not a multiple of its {layer.inputs} "
                                     f"inputs (the shortcut repeats its input)")
            if layer.kind == "binary_pool" and not (layer.tensors["scale"] > 0).all():
                raise ModelFileError(f"{name}: scale must be > 0 (negative scales are folded into the bits)")
        if len(self.class_names) != self.num_classes:
            raise ModelFileError(f"{where}: {len(self.class_names)} class names for {self.num_classes} outputs")
        if self.aggregation not in ("max", "ema"):
            raise ModelFileError(f"{where}: unknown aggregation {self.aggregation!r}")

    @property
    def version(self) -> int:
        """The file format version that holds these layers: the highest their kinds need."""
        return max(KIND_VERSIONS.get(layer.kind, 1) for layer in self.layers)


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
            entries[name] = {"offset": len(payload), "dtype": LAYER_TENSORS[layer.kind][name],
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
                dtype = np.dtype(LAYER_TENSORS[kind].get(name, spec["dtype"])).newbyteorder("<")
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
