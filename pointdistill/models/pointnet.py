"""PointNet classifier (Qi et al. 2017) with optional input and feature T-Nets."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pointdistill.binary.point_pool import point_pool
from pointdistill.binary.popcount import fused_path_applies
from pointdistill.config_checks import check_at_least, check_fraction
from pointdistill.models.per_point import per_point, per_point_layers
from pointdistill.models.registry import ModelOutput, register_model


@dataclass(frozen=True)
class PointNetConfig:
    """point_widths: shared-MLP widths per point (the last is the pooled feature size D);
    the feature T-Net, when on, acts after the second layer. head_widths: classifier MLP."""

    num_classes: int
    point_widths: tuple[int, ...] = (64, 64, 64, 128, 1024)
    head_widths: tuple[int, ...] = (512, 256)
    dropout: float = 0.3
    input_transform: bool = False
    feature_transform: bool = False

    def __post_init__(self):
        check_at_least("PointNetConfig", 2, num_classes=self.num_classes)
        if len(self.point_widths) < 2 or min(self.point_widths) < 1:
            raise ValueError(f"PointNetConfig.point_widths needs >= 2 positive widths, got {self.point_widths}")
        check_fraction("PointNetConfig", dropout=self.dropout)

    @classmethod
    def from_teacher_options(cls, num_classes: int, options) -> "PointNetConfig":
        """From train-teacher's TeacherOptions (pointdistill.models.teacher_options)."""
        options.refuse("pointnet", "neighbours", "centres")
        given = {name: tuple(value) for name, value in (("point_widths", options.point_widths),
                                                        ("head_widths", options.head_widths)) if value is not None}
        return cls(num_classes=num_classes, input_transform=options.input_transform,
                   feature_transform=options.feature_transform, **given)


def point_mlp(widths: list[int]) -> nn.Sequential:
    """Shared MLP widths[0] -> ... -> widths[-1]: 1x1 Conv1d (no bias), BatchNorm, ReLU per layer."""
    layers = []
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


def classifier_head(widths: list[int], num_outputs: int, dropout: float) -> nn.Sequential:
    """Linear (no bias), BatchNorm, ReLU and dropout per hidden width, then Linear to the outputs."""
    layers = []
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(c_in, c_out, bias=False), nn.BatchNorm1d(c_out), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(widths[-1], num_outputs))
    return nn.Sequential(*layers)


class TNet(nn.Module):
    """Predicts a k x k transform from point features [B, N, k]; starts at the identity."""

    def __init__(self, k: int, widths: tuple[int, ...]):
        super().__init__()
        self.k = k
        self.features = point_mlp([k, *widths])
        self.regressor = classifier_head([widths[-1], max(widths[-1] // 2, k), max(widths[-1] // 4, k)], k * k, 0.0)
        nn.init.zeros_(self.regressor[-1].weight)
        nn.init.zeros_(self.regressor[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: point features [B, N, k] -> transform [B, k, k]."""
        pooled = per_point_layers(self.features, x).amax(dim=1)
        eye = torch.eye(self.k, device=x.device, dtype=x.dtype)
        return self.regressor(pooled).view(-1, self.k, self.k) + eye


class PointNet(nn.Module):
    """``training_kernel``: "reference" (autograd) or "fast" (on the CPU, each point layer with its
    BatchNorm and ReLU fused, pointdistill.binary.float_layer, and the widest with its BatchNorm and
    the max, pointdistill.binary.point_pool); the T-Nets always take autograd."""

    def __init__(self, config: PointNetConfig):
        super().__init__()
        self.config = config
        self.training_kernel = "reference"
        w = list(config.point_widths)
        tnet_widths = (w[0], w[-2], w[-1])
        self.input_tnet = TNet(3, tnet_widths) if config.input_transform else None
        self.stem = point_mlp([3, *w[:2]])
        self.feature_tnet = TNet(w[1], tnet_widths) if config.feature_transform else None
        self.trunk = point_mlp(w[1:])
        self.head = classifier_head([w[-1], *config.head_widths], config.num_classes, config.dropout)

    def forward(self, points: torch.Tensor) -> ModelOutput:
        """points: float32 [B, N, 3] -> ModelOutput(logits [B, C], pooled [B, D]). Point features
        stay [B, N, channels] (features last, pointdistill.models.per_point); a T-Net's transform
        T acts as x @ T."""
        x = points
        if self.input_tnet is not None:
            x = torch.bmm(x, self.input_tnet(x))
        x = per_point_layers(self.stem, x, self.training_kernel)
        if self.feature_tnet is not None:
            x = torch.bmm(x, self.feature_tnet(x))
        conv, bn, relu = self.trunk[-3:]
        x = per_point_layers(self.trunk[:-3], x, self.training_kernel)
        if fused_path_applies(self.training_kernel, x, bn, binary=False):
            pooled = relu(point_pool(x, conv.weight[:, :, 0], None, bn))
        else:
            pooled = relu(per_point(bn, per_point(conv, x))).amax(dim=1)
        return ModelOutput(self.head(pooled), pooled)


@register_model("pointnet", PointNetConfig)
def pointnet(config: PointNetConfig) -> PointNet:
    return PointNet(config)
