"""Binary PointNet student (BiPointNet layout): 1-bit shared MLP and head, float first and last layers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pointdistill.binary import AGGREGATIONS, QUANTIZERS, BinaryLinear, create_aggregation
from pointdistill.binary.point_layer import point_layer
from pointdistill.binary.point_pool import point_pool
from pointdistill.binary.popcount import fused_path_applies
from pointdistill.config_checks import check_at_least, check_fraction
from pointdistill.models.per_point import per_point, per_point_layers
from pointdistill.models.registry import ModelOutput, register_model


def check_binary_choices(config) -> None:
    """ValueError unless a binary student config's quantizer and aggregation are registered."""
    name = type(config).__name__
    if config.quantizer not in QUANTIZERS:
        raise ValueError(f"{name}.quantizer {config.quantizer!r} unknown; one of {sorted(QUANTIZERS)}")
    if config.aggregation not in AGGREGATIONS:
        raise ValueError(f"{name}.aggregation {config.aggregation!r} unknown; one of {sorted(AGGREGATIONS)}")


@dataclass(frozen=True, kw_only=True)
class BinaryStudentOf:
    """Turns a teacher's config into its binary student's: listed first among the bases
    (``class BinaryXConfig(BinaryStudentOf, XConfig)``), it adds the quantizer and aggregation
    (keyword-only, after the teacher's fields), checks them after the teacher's own checks, and
    switches ``from_teacher_options`` off (a student is no teacher)."""

    quantizer: str = "lsr"
    aggregation: str = "ema"

    from_teacher_options = None

    def __post_init__(self):
        super().__post_init__()
        check_binary_choices(self)


def binary_head(widths: list[int], num_classes: int, quantizer: str, dropout: float) -> nn.Sequential:
    """The binary students' classifier: per hidden width a binary layer, BatchNorm, Hardtanh, then
    dropout (when ``dropout`` > 0) and a float Linear to the classes. Dropout only before the float
    layer: a dropped unit before a binary layer would read as sign(0) = +1, not as absent."""
    head = []
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        head += [BinaryLinear(c_in, c_out, quantizer), nn.BatchNorm1d(c_out), nn.Hardtanh()]
    if dropout:
        head.append(nn.Dropout(dropout))
    head.append(nn.Linear(widths[-1], num_classes))
    return nn.Sequential(*head)


def binary_point_mlp(widths: list[int], quantizer: str, float_first: bool = False) -> nn.Sequential:
    """Per-point layers widths[0] -> ... -> widths[-1], each followed by BatchNorm, Hardtanh
    between them and none after the last BatchNorm (an aggregation or the next binary layer's
    sign takes it). Binary, but for a float first layer (a kernel-1 Conv1d) where ``float_first``
    (the layer on coordinates)."""
    layers = []
    for index, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
        layer = (nn.Conv1d(c_in, c_out, 1, bias=False) if float_first and index == 0
                 else BinaryLinear(c_in, c_out, quantizer))
        layers += [layer, nn.BatchNorm1d(c_out)]
        if index < len(widths) - 2:
            layers.append(nn.Hardtanh())
    return nn.Sequential(*layers)


def match_channels(x: torch.Tensor, width: int) -> torch.Tensor:
    """x [..., K] -> [..., width], a shortcut's parameter-free path between widths: where width is a
    multiple of K, channel m is x's channel m % K (x repeated); where K is a multiple of width,
    channel m is the mean of x's channels m, m + width, m + 2 width, ... (the repeat's adjoint,
    scaled to keep x's magnitude)."""
    k = x.shape[-1]
    if width >= k:
        return x if width == k else x.repeat(*[1] * (x.dim() - 1), width // k)
    return x.unflatten(-1, (k // width, width)).mean(dim=-2)


def widths_nest(widths) -> bool:
    """True when each width is a multiple or a divisor of the one before it (match_channels applies)."""
    return all(a % b == 0 or b % a == 0 for a, b in zip(widths[:-1], widths[1:]))


@dataclass(frozen=True)
class BinaryPointNetConfig:
    """point_widths: per-point widths, the first layer (3 -> point_widths[0]) in float, the rest
    binary; the last is the pooled size D. head_widths: binary hidden layers of the classifier,
    whose final layer (-> num_classes) is float. Each binary layer is followed by BatchNorm.
    dropout: the probability of dropping a unit before that float layer, in training only.
    shortcuts: real-valued shortcuts around the hidden binary point layers (Bi-Real Net's; every
    point layer but the pooled one): x <- match_channels(x) + Hardtanh(BN(binary(sign x))), the input
    repeated along channels where the layer widens it (each such width a multiple of its input's).
    The layers stay binary; a point carries 32-bit values between them (the engine adds them in
    float32). head_shortcuts: the same around each binary head layer, on the pooled feature
    (h <- match_channels(h) + Hardtanh(BN(binary(sign h))), h's channels averaged in groups where
    the layer narrows it; each head width a multiple or a divisor of the one before), so the float
    classifier reads the pooled feature's real values as well as the binary layers' outputs.
    learned_thresholds: where a shortcut carries a binary layer's input x on (with ``shortcuts``,
    every binary point layer, the pooled one included; with ``head_shortcuts``, every binary head
    layer), the layer reads sign(x - t), t one learned value per input channel (ReActNet's RSign,
    starting at 0), while x itself goes on unchanged: a degree of freedom no BatchNorm bias gives,
    since shifting x would shift what the shortcut carries too."""

    num_classes: int
    point_widths: tuple[int, ...] = (64, 64, 64, 128, 1024)
    head_widths: tuple[int, ...] = (512, 256)
    quantizer: str = "lsr"
    aggregation: str = "ema"
    dropout: float = 0.0
    shortcuts: bool = False
    head_shortcuts: bool = False
    learned_thresholds: bool = False

    def __post_init__(self):
        check_binary_choices(self)
        if len(self.point_widths) < 2 or min(self.point_widths) < 1:
            raise ValueError(f"BinaryPointNetConfig.point_widths needs >= 2 positive widths, got {self.point_widths}")
        hidden = list(zip(self.point_widths[:-2], self.point_widths[1:-1]))
        if self.shortcuts and any(c_out % c_in for c_in, c_out in hidden):
            raise ValueError(f"BinaryPointNetConfig.shortcuts needs each hidden point width to be a multiple of the "
                             f"one before it (the shortcut repeats its input), got point_widths {self.point_widths}")
        if self.head_shortcuts and not (self.head_widths and widths_nest([self.point_widths[-1], *self.head_widths])):
            raise ValueError(f"BinaryPointNetConfig.head_shortcuts needs head layers, each width a multiple or a divisor "
                             f"of the one before it (from the pooled width {self.point_widths[-1]}), got head_widths "
                             f"{self.head_widths}")
        if self.learned_thresholds and not (self.shortcuts or self.head_shortcuts):
            raise ValueError("BinaryPointNetConfig.learned_thresholds shift the inputs that shortcuts carry; set "
                             "shortcuts or head_shortcuts (without them a threshold is a BatchNorm bias)")
        check_at_least("BinaryPointNetConfig", 2, num_classes=self.num_classes)
        check_fraction("BinaryPointNetConfig", dropout=self.dropout)


class BinaryPointNet(nn.Module):
    """``training_kernel``: "reference" (autograd) or "fast": on the CPU, the float first layer with
    its BatchNorm and Hardtanh (pointdistill.binary.float_layer), each binary point layer with its
    BatchNorm and Hardtanh (pointdistill.binary.point_layer), and the last one with its BatchNorm
    and the aggregation (pointdistill.binary.point_pool), fused, the binary ones with XNOR-popcount
    kernels."""

    def __init__(self, config: BinaryPointNetConfig):
        super().__init__()
        self.config = config
        self.training_kernel = "reference"
        w = list(config.point_widths)
        self.stem = nn.Sequential(nn.Conv1d(3, w[0], 1, bias=False), nn.BatchNorm1d(w[0]), nn.Hardtanh())
        self.trunk = binary_point_mlp(w, config.quantizer)  # its last BatchNorm feeds the aggregation
        self.aggregate = create_aggregation(config.aggregation)
        self.head = binary_head([w[-1], *config.head_widths], config.num_classes, config.quantizer, config.dropout)
        thresholds = config.learned_thresholds
        # t [K] per binary layer's input, in the order of the layers; empty where a shortcut carries none
        self.point_thresholds = nn.ParameterList(
            [nn.Parameter(torch.zeros(k)) for k in w[:-1]] if thresholds and config.shortcuts and len(w) > 2 else [])
        self.head_thresholds = nn.ParameterList(
            [nn.Parameter(torch.zeros(k)) for k in [w[-1], *config.head_widths[:-1]]]
            if thresholds and config.head_shortcuts else [])

    def forward(self, points: torch.Tensor) -> ModelOutput:
        """points: float32 [B, N, 3] -> ModelOutput(logits [B, C], pooled [B, D]). Point features
        stay [B, N, channels] (features last, pointdistill.models.per_point)."""
        x = per_point_layers(self.stem, points, self.training_kernel)
        hardtanh_output = not self.config.shortcuts  # a shortcut's sum leaves [-1, 1]
        hidden = self.trunk[:-2]
        for index, (layer, bn, activation) in enumerate(zip(hidden[0::3], hidden[1::3], hidden[2::3])):
            read = self.thresholded(x, self.point_thresholds, index)
            if fused_path_applies(self.training_kernel, x, bn, binary=True):
                a, wq, a_scale, w_scale = layer.quantized_operands(read, x_is_hardtanh_output=hardtanh_output)
                z = point_layer(a, wq, layer.quantizer.output_factor(), bn, (a_scale, w_scale))
            else:
                z = activation(per_point(bn, layer(read)))
            x = match_channels(x, z.shape[-1]) + z if self.config.shortcuts else z
        last, bn = self.trunk[-2:]
        read = self.thresholded(x, self.point_thresholds, len(hidden) // 3)
        if fused_path_applies(self.training_kernel, x, bn, binary=True):
            a, wq, a_scale, w_scale = last.quantized_operands(read, x_is_hardtanh_output=hardtanh_output)
            pooled = (point_pool(a, wq, last.quantizer.output_factor(), bn,
                                 magnitudes=(a_scale, w_scale)) + self.aggregate.offset(x.shape[1]))
        else:
            pooled = self.aggregate(per_point(bn, last(read)))
        return ModelOutput(self.classify(pooled), pooled)

    @staticmethod
    def thresholded(x: torch.Tensor, thresholds: nn.ParameterList, index: int) -> torch.Tensor:
        """What binary layer ``index`` of a stack reads: x [..., K] less its learned thresholds [K],
        or x itself where the stack has none."""
        return x - thresholds[index] if thresholds else x

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """pooled [B, D] -> logits [B, C] through the head (with its shortcuts where configured)."""
        if not self.config.head_shortcuts:
            return self.head(pooled)
        h, binary_count = pooled, 3 * len(self.config.head_widths)
        for index, (layer, bn, activation) in enumerate(zip(self.head[0:binary_count:3], self.head[1:binary_count:3],
                                                            self.head[2:binary_count:3])):
            z = activation(bn(layer(self.thresholded(h, self.head_thresholds, index))))
            h = match_channels(h, z.shape[-1]) + z
        return self.head[binary_count:](h)


@register_model("binary_pointnet", BinaryPointNetConfig)
def binary_pointnet(config: BinaryPointNetConfig) -> BinaryPointNet:
    return BinaryPointNet(config)
