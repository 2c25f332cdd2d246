"""PointNet++ classifier, single-scale grouping (Qi et al. 2017, "SSG"): set abstraction levels
(farthest point sampling, ball query, a shared MLP on each neighbourhood, max over it), then one
level over the whole cloud whose max is the pooled feature."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pointdistill.config_checks import check_at_least, check_fraction
from pointdistill.models.neighbourhood import ball_query, farthest_point_sample, gather_points
from pointdistill.models.per_point import per_point_layers
from pointdistill.models.pointnet import classifier_head, point_mlp
from pointdistill.models.registry import ModelOutput, register_model


@dataclass(frozen=True)
class PointNet2Config:
    """Per local level i: centres[i] points sampled (farthest point sampling) from the previous
    level's, each grouping its first neighbours[i] points within radii[i] (coordinates relative to
    the centre, with the previous level's features) through a shared MLP of widths
    level_widths[i], max-pooled over the group. Then global_widths over every remaining centre;
    its max over them is the pooled feature, global_widths[-1] wide. head_widths: classifier MLP.
    Defaults: the paper's ModelNet40 SSG network (input 1,024 points, radii in the unit sphere)."""

    num_classes: int
    centres: tuple[int, ...] = (512, 128)
    radii: tuple[float, ...] = (0.2, 0.4)
    neighbours: tuple[int, ...] = (32, 64)
    level_widths: tuple[tuple[int, ...], ...] = ((64, 64, 128), (128, 128, 256))
    global_widths: tuple[int, ...] = (256, 512, 1024)
    head_widths: tuple[int, ...] = (512, 256)
    dropout: float = 0.5

    def __post_init__(self):
        owner = type(self).__name__  # a binary student's config names itself
        check_at_least(owner, 2, num_classes=self.num_classes)
        levels = len(self.centres)
        if not len(self.radii) == len(self.neighbours) == len(self.level_widths) == levels:
            raise ValueError(f"{owner}: centres, radii, neighbours and level_widths need one entry per "
                             f"local level, got {levels}, {len(self.radii)}, {len(self.neighbours)} and "
                             f"{len(self.level_widths)}")
        if any(c < 1 for c in self.centres) or any(k < 1 for k in self.neighbours) or any(r <= 0 for r in self.radii):
            raise ValueError(f"{owner}: centres {self.centres}, neighbours {self.neighbours} and radii "
                             f"{self.radii} must be positive")
        if list(self.centres) != sorted(self.centres, reverse=True):
            raise ValueError(f"{owner}.centres must not grow from level to level, got {self.centres}")
        widths = [*self.level_widths, self.global_widths]
        if any(not w or min(w) < 1 for w in widths):
            raise ValueError(f"{owner}: every level needs positive widths, got {widths}")
        check_fraction(owner, dropout=self.dropout)

    @classmethod
    def from_teacher_options(cls, num_classes: int, options) -> "PointNet2Config":
        """From train-teacher's TeacherOptions: centres per local level (default 512,128, for
        clouds of at least 512 points) and head_widths; the rest is the paper's network."""
        options.refuse("pointnet2_ssg", "point_widths", "neighbours", "input_transform", "feature_transform")
        given = {name: tuple(value) for name, value in (("centres", options.centres),
                                                        ("head_widths", options.head_widths)) if value is not None}
        if "centres" in given and len(given["centres"]) != len(cls.centres):
            raise ValueError(f"pointnet2_ssg centres: one count per local level ({len(cls.centres)}), "
                             f"got {list(given['centres'])}")
        return cls(num_classes=num_classes, **given)


def group_neighbourhoods(xyz: torch.Tensor, features: torch.Tensor | None, centres: int, radius: float,
                         neighbours: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A set abstraction's grouping: ``centres`` points by farthest point sampling, each with its
    first ``neighbours`` points within ``radius`` (ball query).

    xyz: float [B, N, 3]; features: [B, N, C] or None. Returns the centres' xyz [B, M, 3] and the
    groups [B, M, k, 3 + C]: coordinates relative to the centre, then the features."""
    n = xyz.shape[1]
    if centres > n:
        raise ValueError(f"pointnet2_ssg: a set abstraction samples {centres} centres from clouds of {n} "
                         f"points; give the model fewer centres or the clouds more points")
    centre_xyz = gather_points(xyz, farthest_point_sample(xyz, centres))  # [B, M, 3]
    group = ball_query(centre_xyz, xyz, radius, min(neighbours, n))  # [B, M, k]
    grouped = gather_points(xyz, group) - centre_xyz[:, :, None, :]
    if features is not None:
        grouped = torch.cat([grouped, gather_points(features, group)], dim=-1)
    return centre_xyz, grouped


class SetAbstraction(nn.Module):
    """(xyz [B, N, 3], features [B, N, C] or None) -> (centres' xyz [B, M, 3], features [B, M, C'])."""

    def __init__(self, centres: int, radius: float, neighbours: int, c_in: int, widths: tuple[int, ...]):
        super().__init__()
        self.centres, self.radius, self.neighbours = centres, radius, neighbours
        self.mlp = point_mlp([c_in + 3, *widths])

    def forward(self, xyz: torch.Tensor, features: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        centres, grouped = group_neighbourhoods(xyz, features, self.centres, self.radius, self.neighbours)
        batch, m, k, channels = grouped.shape
        out = per_point_layers(self.mlp, grouped.reshape(batch, m * k, channels))  # the groups' points as points
        return centres, out.view(batch, m, k, -1).amax(dim=2)


class PointNet2(nn.Module):
    """No fused CPU path: autograd on every device (``training_kernel`` is not read)."""

    def __init__(self, config: PointNet2Config):
        super().__init__()
        self.config = config
        levels, c_in = [], 0
        for centres, radius, neighbours, widths in zip(config.centres, config.radii, config.neighbours,
                                                       config.level_widths):
            levels.append(SetAbstraction(centres, radius, neighbours, c_in, widths))
            c_in = widths[-1]
        self.levels = nn.ModuleList(levels)
        self.global_mlp = point_mlp([c_in + 3, *config.global_widths])
        self.head = classifier_head([config.global_widths[-1], *config.head_widths], config.num_classes, config.dropout)

    def forward(self, points: torch.Tensor) -> ModelOutput:
        """points: float32 [B, N, 3] -> ModelOutput(logits [B, C], pooled [B, global_widths[-1]]):
        the pooled feature is the global level's max over the last centres."""
        xyz, features = points, None
        for level in self.levels:
            xyz, features = level(xyz, features)
        pooled = per_point_layers(self.global_mlp, torch.cat([xyz, features], dim=-1)).amax(dim=1)
        return ModelOutput(self.head(pooled), pooled)


@register_model("pointnet2_ssg", PointNet2Config)
def pointnet2_ssg(config: PointNet2Config) -> PointNet2:
    return PointNet2(config)
