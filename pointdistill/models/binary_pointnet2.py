"""Binary PointNet++ (SSG) student: the teacher's set abstraction levels with 1-bit shared MLPs,
every max over a group or over the cloud an aggregation (max, or EMA with the offset for the
number of elements it pools: the neighbours of a group, the centres of the global level). Float:
the first layer of the first level (on coordinates) and the classifier's last layer, as
BiPointNet keeps the first and last layers of PointNet float. No fused CPU path, no engine export."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pointdistill.binary import create_aggregation
from pointdistill.models.binary_pointnet import BinaryStudentOf, binary_head, binary_point_mlp
from pointdistill.models.per_point import per_point_layers
from pointdistill.models.pointnet2 import PointNet2Config, group_neighbourhoods
from pointdistill.models.registry import ModelOutput, register_model


@dataclass(frozen=True)
class BinaryPointNet2Config(BinaryStudentOf, PointNet2Config):
    """PointNet2Config's architecture as a binary student: with a quantizer and an aggregation, and
    no dropout by default."""

    dropout: float = 0.0


class BinarySetAbstraction(nn.Module):
    """(xyz [B, N, 3], features [B, N, C] or None) -> (centres' xyz [B, M, 3], the aggregation of
    each group's last BatchNorm output, [B, M, C'])."""

    def __init__(self, centres: int, radius: float, neighbours: int, c_in: int, widths: tuple[int, ...],
                 config: BinaryPointNet2Config, float_first: bool):
        super().__init__()
        self.centres, self.radius, self.neighbours = centres, radius, neighbours
        self.mlp = binary_point_mlp([c_in + 3, *widths], config.quantizer, float_first)
        self.aggregate = create_aggregation(config.aggregation)

    def forward(self, xyz: torch.Tensor, features: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        centres, grouped = group_neighbourhoods(xyz, features, self.centres, self.radius, self.neighbours)
        batch, m, k, channels = grouped.shape
        out = per_point_layers(self.mlp, grouped.reshape(batch, m * k, channels))
        return centres, self.aggregate(out.view(batch * m, k, -1)).view(batch, m, -1)  # over each group's k


class BinaryPointNet2(nn.Module):
    """Autograd on every device (``training_kernel`` is not read)."""

    def __init__(self, config: BinaryPointNet2Config):
        super().__init__()
        self.config = config
        levels, c_in = [], 0
        for index, (centres, radius, neighbours, widths) in enumerate(zip(
                config.centres, config.radii, config.neighbours, config.level_widths)):
            levels.append(BinarySetAbstraction(centres, radius, neighbours, c_in, widths, config, index == 0))
            c_in = widths[-1]
        self.levels = nn.ModuleList(levels)
        self.global_mlp = binary_point_mlp([c_in + 3, *config.global_widths], config.quantizer)
        self.aggregate = create_aggregation(config.aggregation)
        self.head = binary_head([config.global_widths[-1], *config.head_widths], config.num_classes,
                                config.quantizer, config.dropout)

    def forward(self, points: torch.Tensor) -> ModelOutput:
        """points: float32 [B, N, 3] -> ModelOutput(logits [B, C], pooled [B, global_widths[-1]])."""
        xyz, features = points, None
        for level in self.levels:
            xyz, features = level(xyz, features)
        pooled = self.aggregate(per_point_layers(self.global_mlp, torch.cat([xyz, features], dim=-1)))
        return ModelOutput(self.head(pooled), pooled)


@register_model("binary_pointnet2_ssg", BinaryPointNet2Config)
def binary_pointnet2_ssg(config: BinaryPointNet2Config) -> BinaryPointNet2:
    return BinaryPointNet2(config)
