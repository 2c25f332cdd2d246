"""Binary PointNet student (BiPointNet layout): 1-bit shared MLP and head, float first and last layers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pointdistill.binary import AGGREGATIONS, QUANTIZERS, BinaryLinear, create_aggregation
from pointdistill.binary.point_pool import fused_pooling_applies, point_pool
from pointdistill.models.registry import ModelOutput, register_model


@dataclass(frozen=True)
class BinaryPointNetConfig:
    """point_widths: per-point widths, the first layer (3 -> point_widths[0]) in float, the rest
    binary; the last is the pooled size D. head_widths: binary hidden layers of the classifier,
    whose final layer (-> num_classes) is float. Each binary layer is followed by BatchNorm."""

    num_classes: int
    point_widths: tuple[int, ...] = (64, 64, 64, 128, 1024)
    head_widths: tuple[int, ...] = (512, 256)
    quantizer: str = "lsr"
    aggregation: str = "ema"
    dropout: float = 0.0

    def __post_init__(self):
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"BinaryPointNetConfig.quantizer {self.quantizer!r} unknown; one of {sorted(QUANTIZERS)}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(
                f"BinaryPointNetConfig.aggregation {self.aggregation!r} unknown; one of {sorted(AGGREGATIONS)}")
        if len(self.point_widths) < 2 or min(self.point_widths) < 1:
            raise ValueError(f"BinaryPointNetConfig.point_widths needs >= 2 positive widths, got {self.point_widths}")
        if self.num_classes < 2:
            raise ValueError(f"BinaryPointNetConfig.num_classes must be >= 2, got {self.num_classes}")


class BinaryPointNet(nn.Module):
    """``training_kernel``: "reference" (autograd) or "fast" (the last point layer, its BatchNorm
    and the aggregation fused on the CPU with XNOR-popcount kernels, pointdistill.binary.point_pool)."""

    def __init__(self, config: BinaryPointNetConfig):
        super().__init__()
        self.config = config
        self.training_kernel = "reference"
        w = list(config.point_widths)
        self.stem = nn.Sequential(nn.Conv1d(3, w[0], 1, bias=False), nn.BatchNorm1d(w[0]), nn.Hardtanh())
        trunk = []
        for index, (c_in, c_out) in enumerate(zip(w[:-1], w[1:])):
            trunk += [BinaryLinear(c_in, c_out, config.quantizer), nn.BatchNorm1d(c_out)]
            if index < len(w) - 2:  # the last point layer feeds the aggregation, not an activation
                trunk.append(nn.Hardtanh())
        self.trunk = nn.Sequential(*trunk)
        self.aggregate = create_aggregation(config.aggregation)
        head = []
        widths = [w[-1], *config.head_widths]
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            head += [BinaryLinear(c_in, c_out, config.quantizer), nn.BatchNorm1d(c_out), nn.Hardtanh()]
            if config.dropout:
                head.append(nn.Dropout(config.dropout))
        head.append(nn.Linear(widths[-1], config.num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, points: torch.Tensor) -> ModelOutput:
        """points: float32 [B, N, 3] -> ModelOutput(logits [B, C], pooled [B, D]). Point features
        stay [B, N, channels] (features last): each layer is one matmul over the B * N points and
        BatchNorm reads the same memory as [B * N, channels]."""
        conv, *stem_rest = self.stem
        x = F.linear(points, conv.weight[:, :, 0])  # the 1x1 conv as a matmul, [B, N, w0]
        for module in (*stem_rest, *self.trunk[:-2]):
            x = _per_point(module, x)
        last, bn = self.trunk[-2:]
        if fused_pooling_applies(self.training_kernel, x.transpose(1, 2), bn):
            a, wq, a_scale, w_scale = last.quantized_operands(x)
            pooled = (point_pool(a.transpose(1, 2), wq, last.quantizer.output_factor(), bn,
                                 magnitudes=(a_scale, w_scale)) + self.aggregate.offset(x.shape[1]))
        else:
            pooled = self.aggregate(_per_point(bn, last(x)).transpose(1, 2))
        return ModelOutput(self.head(pooled), pooled)


def _per_point(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module`` on point features [B, N, C]: BatchNorm over the B * N rows, the rest as they are."""
    if isinstance(module, nn.BatchNorm1d):
        return module(x.reshape(-1, x.shape[-1])).reshape(x.shape)
    return module(x)


@register_model("binary_pointnet", BinaryPointNetConfig)
def binary_pointnet(config: BinaryPointNetConfig) -> BinaryPointNet:
    return BinaryPointNet(config)
