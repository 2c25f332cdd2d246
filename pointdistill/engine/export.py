"""Export a trained binary student to a BinaryNetwork: BatchNorm, scales and signs folded.

Every binary layer computes, in eval mode, v = BN(alpha * (sign(x) . sign(w_m))) with one
positive magnitude per weight row and the quantizer's output scale folded into alpha (LSR's
fixed scalar, Bi-Real's and IR-Net's row scales). With s = gamma * alpha / sqrt(var + eps)
and c = beta - gamma * mean / sqrt(var + eps), v = s * dot + c, dot = K - 2 * popcount(x XOR w).
The next layer only needs sign(v) (Hardtanh keeps the sign; sign(0) = +1), so:

  s > 0:  v >= 0  <=>  popcount <= floor((K + c / s) / 2)
  s < 0:  flip the channel's weight bits (dot -> -dot), then as above with -s
  s = 0:  constant: threshold K (always +1) if c >= 0, else -1 (never)

A student with real-valued shortcuts keeps s and c (sign folded into the bits as above) on its
hidden point layers, whose real outputs the engine adds to their inputs (``binary_shortcut``);
with head shortcuts, on its pooled layer (``binary_pool_real``: the pooled real values) and its
head layers (``binary_shortcut``, per cloud). Learned thresholds (``learned_thresholds``: a layer
reads sign(x - t) of the real values x) are kept as each reading layer's ``input_threshold``: the
engine takes bit k = (x[k] >= t[k]), the same test (x - t and x >= t agree in IEEE arithmetic).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from pointdistill.binary import BinaryLinear
from pointdistill.binary.quantizers import sign
from pointdistill.engine.model_file import BinaryNetwork, Layer, words
from pointdistill.models import Checkpoint


class ExportError(ValueError):
    """The student cannot be exported (architecture or quantizer not supported)."""


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """bool [..., K] -> uint64 [..., ceil(K / 64)]: channel k at bit k % 64 of word k // 64."""
    k = bits.shape[-1]
    padded = np.zeros((*bits.shape[:-1], words(k) * 64), dtype=bool)
    padded[..., :k] = bits
    return np.packbits(padded, axis=-1, bitorder="little").view("<u8").astype(np.uint64)


def _batchnorm_affine(bn: nn.BatchNorm1d) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) float64 [M] with BN(y) = a * y + b in eval mode."""
    sd = torch.sqrt(bn.running_var.double() + bn.eps)
    a = bn.weight.double() / sd
    return a.numpy(), (bn.bias.double() - bn.running_mean.double() * a).numpy()


def _binary_weights(layer: BinaryLinear) -> tuple[np.ndarray, np.ndarray]:
    """(weight signs bool [M, K] (True = +1), alpha float64 [M]): the layer's binarised weight
    is alpha[m] * sign and its output scale is folded into alpha. Refuses quantizers whose
    activations are not plain signs (XNOR scales them per sample)."""
    q = layer.quantizer
    probe = torch.linspace(-2, 2, 2 * layer.weight.shape[1] + 1)[None, : layer.weight.shape[1]]
    if not torch.equal(q.activation(probe), sign(probe)):
        raise ExportError(f"quantizer {q.name!r} does not binarise activations to plain signs (XNOR-Net scales "
                          f"them by each sample's mean |a|), so its layers cannot be folded into integer "
                          f"thresholds; export supports quantizers with sign activations")
    wq = q.weight(layer.weight).detach().double()  # [M, K]
    magnitude = wq.abs()
    alpha = magnitude.amax(dim=1)
    if not torch.allclose(magnitude, alpha[:, None].expand_as(magnitude), rtol=1e-6, atol=0):
        raise ExportError(f"quantizer {q.name!r} gives weights that are not one magnitude per row times a sign")
    out_scale = q.output_scale(torch.ones(1, wq.shape[0], dtype=torch.float64)).detach().double()[0]
    return (wq >= 0).numpy(), (alpha * out_scale).numpy()


def _folded(layer: BinaryLinear, bn: nn.BatchNorm1d) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weight bits uint64 [M, Kw] with negative-scale channels flipped, s >= 0, c float64 [M])."""
    signs, alpha = _binary_weights(layer)
    a, b = _batchnorm_affine(bn)
    s, c = a * alpha, b
    negative = s < 0
    signs = np.where(negative[:, None], ~signs, signs)
    return pack_bits(signs), np.abs(s), c


def popcount_thresholds(s: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    """int32 [M]: largest popcount P with s * (k - 2 P) + c >= 0 (s >= 0), clamped to [-1, k]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.floor((k + c / s) / 2)
    bound = np.where(s > 0, bound, np.where(c >= 0, k, -1))
    return np.clip(bound, -1, k).astype(np.int32)


def _binary_point_layers(module: nn.Sequential) -> list[tuple[BinaryLinear, nn.BatchNorm1d]]:
    layers = list(module)
    pairs = []
    for index, layer in enumerate(layers):
        if isinstance(layer, BinaryLinear):
            bn = layers[index + 1] if index + 1 < len(layers) else None
            if not isinstance(bn, nn.BatchNorm1d):
                raise ExportError("every binary layer must be followed by BatchNorm1d")
            pairs.append((layer, bn))
    return pairs


def _folded_layer(kind: str, layer: BinaryLinear, bn: nn.BatchNorm1d) -> Layer:
    """The layer of ``kind``: "binary" keeps a popcount threshold; "binary_pool", "binary_pool_real",
    "binary_float" and "binary_shortcut" keep the folded scale and offset."""
    bits, s, c = _folded(layer, bn)
    k, m = layer.weight.shape[1], layer.weight.shape[0]
    if kind == "binary":
        return Layer(kind, k, m, {"bits": bits, "threshold": popcount_thresholds(s, c, k)})
    if kind == "binary_pool" and not (s > 0).all():
        raise ExportError("a pooled channel has scale 0 (BatchNorm weight 0); cannot export")
    return Layer(kind, k, m, {"bits": bits, "scale": s.astype(np.float32), "offset": c.astype(np.float32)})


def _binary_stack(pairs: list[tuple[BinaryLinear, nn.BatchNorm1d]], hidden_kind: str, last_kind: str,
                  input_thresholds: nn.ParameterList | tuple = ()) -> list[Layer]:
    """The stack's layers as ``hidden_kind`` ("binary" or "binary_shortcut"), its last as
    ``last_kind`` ("binary_pool", "binary_pool_real", "binary_float" or "binary_shortcut"); with
    ``input_thresholds`` (one [K] per layer: the student's learned thresholds), each layer keeps its
    own as ``input_threshold``."""
    layers = [_folded_layer(hidden_kind if index < len(pairs) - 1 else last_kind, *pair)
              for index, pair in enumerate(pairs)]
    for layer, threshold in zip(layers, input_thresholds):
        layer.tensors["input_threshold"] = threshold.detach().numpy().astype(np.float32)
    return layers


# binary students whose layers do not map onto the engine's, and why
REGROUPING_STUDENTS = {"binary_dgcnn": "a kNN graph per EdgeConv",
                       "binary_pointnet2_ssg": "farthest point sampling and ball query per set abstraction"}


def export_student(checkpoint: Checkpoint) -> BinaryNetwork:
    """Fold a ``binary_pointnet`` student checkpoint into a BinaryNetwork."""
    name = checkpoint.spec.get("name")
    if name in REGROUPING_STUDENTS:
        raise ExportError(f"{name} does not export: the engine runs PointNet's layer sequence (per-point layers "
                          f"over the cloud, one pool, the head), and this student regroups points between its "
                          f"layers ({REGROUPING_STUDENTS[name]})")
    if name != "binary_pointnet":
        raise ExportError(f"only binary_pointnet students export; this checkpoint is {name!r}")
    bad = [k for k, v in checkpoint.state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ExportError(f"the checkpoint holds NaN or infinite values in {len(bad)} tensors ({', '.join(bad[:3])}"
                          f"{', ...' if len(bad) > 3 else ''}): its training diverged; nothing to export")
    model = checkpoint.build_model()
    config = model.config
    if not config.head_widths:
        raise ExportError("export needs at least one binary head layer (head_widths) before the classifier")
    point_pairs = _binary_point_layers(model.trunk)
    shortcuts = config.shortcuts and len(point_pairs) > 1  # without hidden point layers there is none
    with torch.no_grad():
        conv, bn0 = model.stem[0], model.stem[1]
        a0, b0 = _batchnorm_affine(bn0)
        layers = [Layer("stem_real" if shortcuts else "stem", 3, conv.out_channels, {
            "weight": conv.weight[:, :, 0].double().numpy().astype(np.float32),
            "scale": a0.astype(np.float32), "offset": b0.astype(np.float32)})]
        layers += _binary_stack(point_pairs, "binary_shortcut" if shortcuts else "binary",
                                "binary_pool_real" if config.head_shortcuts else "binary_pool", model.point_thresholds)
        head = nn.Sequential(*[m for m in model.head if not isinstance(m, nn.Dropout)])
        layers += (_binary_stack(_binary_point_layers(head), "binary_shortcut", "binary_shortcut", model.head_thresholds)
                   if config.head_shortcuts else _binary_stack(_binary_point_layers(head), "binary", "binary_float"))
        fc = model.head[-1]
        layers.append(Layer("linear", fc.in_features, fc.out_features, {
            "weight": fc.weight.numpy().astype(np.float32), "bias": fc.bias.numpy().astype(np.float32)}))
    network = BinaryNetwork(layers, list(checkpoint.class_names), config.aggregation,
                            {"model": checkpoint.spec, "weights_sha256": checkpoint.weights_sha256(),
                             "num_points": checkpoint.dataset.get("num_points"),
                             "dataset_fingerprint": checkpoint.dataset.get("fingerprint")})
    network.validate("exported student")
    return network


def export_file(student: str, out: str, check_clouds: int = 4) -> dict:
    """Export the student checkpoint at ``student`` to the model file ``out``, then run the
    engine and the PyTorch student on ``check_clouds`` random clouds. Returns {bytes,
    float_weight_bytes, checkpoint_bytes, max_abs_difference (of the logits)}."""
    from pointdistill.engine.model_file import save_network
    from pointdistill.engine.runtime import Engine
    from pointdistill.models import load_checkpoint
    from pointdistill.report import float_bytes
    from pointdistill.storage import filesystem

    checkpoint = load_checkpoint(student)
    network = export_student(checkpoint)
    size = save_network(out, network)
    generator = torch.Generator().manual_seed(0)
    clouds = torch.randn(check_clouds, network.source.get("num_points") or 1024, 3, generator=generator)
    model = checkpoint.build_model()
    with torch.no_grad():
        expected = model(clouds).logits.numpy()
    fs, path = filesystem(student)
    return {
        "bytes": size,
        "float_weight_bytes": float_bytes(model),
        "checkpoint_bytes": int(fs.size(path)),
        "max_abs_difference": float(np.abs(Engine(network)(clouds.numpy()) - expected).max()),
    }


def pooled_offsets(layer: Layer, aggregation: str, num_points: int) -> np.ndarray:
    """float64 [M]: a pooled layer's offset plus the aggregation's for clouds of ``num_points`` points."""
    from pointdistill.binary import ema_offset

    delta = ema_offset(num_points) if aggregation == "ema" else 0.0
    if not math.isfinite(delta):
        raise ValueError(f"no EMA offset for {num_points} points")
    return layer.tensors["offset"].astype(np.float64) + delta


def pool_thresholds(layer: Layer, aggregation: str, num_points: int) -> np.ndarray:
    """int32 [M] thresholds of a ``binary_pool`` layer for clouds of ``num_points`` points."""
    return popcount_thresholds(layer.tensors["scale"].astype(np.float64),
                               pooled_offsets(layer, aggregation, num_points), layer.inputs)


def pool_real_offsets(layer: Layer, aggregation: str, num_points: int) -> np.ndarray:
    """float32 [M]: a ``binary_pool_real`` layer's offset_N for clouds of ``num_points`` points."""
    return pooled_offsets(layer, aggregation, num_points).astype(np.float32)
