"""Binary DGCNN student: the teacher's EdgeConv layers and embedding with 1-bit weights and
activations, every max an aggregation (max, or EMA with the offset for the number of elements it
pools: the k neighbours of an EdgeConv, the points of the cloud for the pooled max; the pooled
mean stays a mean). Float: the first EdgeConv's layer (on coordinates) and the classifier's last
layer, as BiPointNet keeps the first and last layers of PointNet float. Each kNN graph is built
on the previous layer's aggregated (real-valued) output. No fused CPU path, no engine export."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pointdistill.binary import create_aggregation
from pointdistill.models.binary_pointnet import BinaryStudentOf, binary_head, binary_point_mlp
from pointdistill.models.dgcnn import DGCNNConfig, edge_features
from pointdistill.models.per_point import per_point_layers
from pointdistill.models.registry import ModelOutput, register_model


@dataclass(frozen=True)
class BinaryDGCNNConfig(BinaryStudentOf, DGCNNConfig):
    """DGCNNConfig's architecture as a binary student: with a quantizer and an aggregation, and
    no dropout by default."""

    dropout: float = 0.0


class BinaryEdgeConv(nn.Module):
    """x [B, N, C] -> the aggregation over the k neighbours j of each point i of
    BN(layer([x_i, x_j - x_i])), [B, N, C']."""

    def __init__(self, c_in: int, c_out: int, k: int, config: BinaryDGCNNConfig, float_layer: bool):
        super().__init__()
        self.k = k
        self.mlp = binary_point_mlp([2 * c_in, c_out], config.quantizer, float_layer)
        self.aggregate = create_aggregation(config.aggregation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        edges = edge_features(x, self.k)
        batch, n, k, channels = edges.shape
        out = per_point_layers(self.mlp, edges.reshape(batch, n * k, channels))
        return self.aggregate(out.view(batch * n, k, -1)).view(batch, n, -1)


class BinaryDGCNN(nn.Module):
    """Autograd on every device (``training_kernel`` is not read)."""

    def __init__(self, config: BinaryDGCNNConfig):
        super().__init__()
        self.config = config
        widths = [3, *config.edge_widths]
        self.edge_convs = nn.ModuleList(BinaryEdgeConv(c_in, c_out, config.k, config, index == 0)
                                        for index, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])))
        self.embed = binary_point_mlp([sum(config.edge_widths), config.embed_width], config.quantizer)
        self.aggregate = create_aggregation(config.aggregation)
        self.head = binary_head([2 * config.embed_width, *config.head_widths], config.num_classes,
                                config.quantizer, config.dropout)

    def forward(self, points: torch.Tensor) -> ModelOutput:
        """points: float32 [B, N, 3] -> ModelOutput(logits [B, C], pooled [B, 2 * embed_width]):
        the embedding's aggregation over the points, then its mean."""
        x, features = points, []
        for edge_conv in self.edge_convs:
            x = edge_conv(x)
            features.append(x)
        embedded = per_point_layers(self.embed, torch.cat(features, dim=-1))  # [B, N, embed_width]
        pooled = torch.cat([self.aggregate(embedded), embedded.mean(dim=1)], dim=-1)
        return ModelOutput(self.head(pooled), pooled)


@register_model("binary_dgcnn", BinaryDGCNNConfig)
def binary_dgcnn(config: BinaryDGCNNConfig) -> BinaryDGCNN:
    return BinaryDGCNN(config)
