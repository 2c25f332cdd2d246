"""DGCNN classifier (Wang et al. 2019): EdgeConv on a k-nearest-neighbour graph recomputed in
each layer's feature space, then a wide point layer and global max + average pooling."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pointdistill.config_checks import check_at_least, check_fraction
from pointdistill.models.edge_conv import (edge_max, edge_max_inference, fused_edge_conv_applies,
                                           inference_edge_conv_applies)
from pointdistill.models.neighbourhood import gather_points, knn
from pointdistill.models.per_point import per_point_layers
from pointdistill.models.registry import ModelOutput, register_model

NEGATIVE_SLOPE = 0.2  # LeakyReLU, as in the paper


@dataclass(frozen=True)
class DGCNNConfig:
    """edge_widths: output widths of the EdgeConv layers (each over a fresh kNN graph of its
    input features, the first over the coordinates); embed_width: the point layer after them,
    fed all their outputs concatenated; the pooled feature is [max, mean] over the points,
    2 * embed_width wide. k: neighbours per point. head_widths: classifier MLP."""

    num_classes: int
    k: int = 20
    edge_widths: tuple[int, ...] = (64, 64, 128, 256)
    embed_width: int = 1024
    head_widths: tuple[int, ...] = (512, 256)
    dropout: float = 0.5

    def __post_init__(self):
        owner = type(self).__name__  # a binary student's config names itself
        check_at_least(owner, 2, num_classes=self.num_classes)
        check_at_least(owner, 1, k=self.k)
        if not self.edge_widths or min(self.edge_widths) < 1 or self.embed_width < 1:
            raise ValueError(f"{owner}: edge_widths {self.edge_widths} and embed_width {self.embed_width} "
                             f"must be positive, with at least one EdgeConv")
        check_fraction(owner, dropout=self.dropout)

    @classmethod
    def from_teacher_options(cls, num_classes: int, options) -> "DGCNNConfig":
        """From train-teacher's TeacherOptions: point_widths are the EdgeConv widths, then the
        embedding width (at least two); neighbours is k."""
        options.refuse("dgcnn", "centres", "input_transform", "feature_transform")
        given = {}
        if options.point_widths is not None:
            if len(options.point_widths) < 2:
                raise ValueError(f"dgcnn point_widths: EdgeConv widths then the embedding width, at least two; "
                                 f"got {list(options.point_widths)}")
            given.update(edge_widths=tuple(options.point_widths[:-1]), embed_width=options.point_widths[-1])
        if options.head_widths is not None:
            given["head_widths"] = tuple(options.head_widths)
        if options.neighbours is not None:
            given["k"] = options.neighbours
        return cls(num_classes=num_classes, **given)


def _point_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out), nn.LeakyReLU(NEGATIVE_SLOPE))


def edge_features(x: torch.Tensor, k: int) -> torch.Tensor:
    """EdgeConv's edges on a fresh kNN graph of x [B, N, C]: [x_i, x_j - x_i] for each point i
    and each of its k nearest j (itself included), [B, N, k, 2C]."""
    neighbours = gather_points(x, knn(x, min(k, x.shape[1])))  # [B, N, k, C]
    centre = x[:, :, None, :].expand_as(neighbours)
    return torch.cat([centre, neighbours - centre], dim=-1)


def edge_terms(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear layer W = [W_c, W_o] [C', 2C] on the edges [x_i, x_j - x_i] of x [B, N, C], split
    into its centre term (W_c - W_o) x_i and neighbour term W_o x_j, each [B, N, C']: the edge's
    product is their sum."""
    channels = x.shape[-1]
    w_centre, w_offset = weight[:, :channels], weight[:, channels:]
    return x @ (w_centre - w_offset).T, x @ w_offset.T


class EdgeConv(nn.Module):
    """x [B, N, C] -> max over the k neighbours j of each point i of MLP([x_i, x_j - x_i]), [B, N, C'].

    The layer is linear before its BatchNorm, so W [x_i, x_j - x_i] = (W_c - W_o) x_i + W_o x_j
    (W = [W_c, W_o]): two products over the N points and a gather, instead of forming the
    [B, N, k, 2C] edges and multiplying over all N k of them (the same function, up to float
    rounding; the module and its state dict are the 2C-wide Conv1d's). With ``fused`` (training
    on the CPU), BatchNorm, LeakyReLU and the max run as one op over the neighbours
    (pointdistill.models.edge_conv): no [B, N, k, C'] tensor at all; at inference on the CPU
    (eval mode, no gradient asked) likewise, always."""

    def __init__(self, c_in: int, c_out: int, k: int):
        super().__init__()
        self.k = k
        self.mlp = _point_block(2 * c_in, c_out)

    def forward(self, x: torch.Tensor, fused: bool = False) -> torch.Tensor:
        conv, norm, activation = self.mlp
        batch, n, _ = x.shape
        centre, neighbour = edge_terms(x, conv.weight[:, :, 0])
        index = knn(x, min(self.k, n))  # [B, N, k]
        if fused and fused_edge_conv_applies(centre, norm):
            return edge_max(centre, neighbour, index, norm, activation.negative_slope)
        if inference_edge_conv_applies(centre, neighbour, norm):
            return edge_max_inference(centre, neighbour, index, norm, activation.negative_slope)
        edges = centre[:, :, None, :] + gather_points(neighbour, index)  # [B, N, k, C']
        out = per_point_layers([norm, activation], edges.reshape(batch, -1, edges.shape[-1]))
        return out.view(edges.shape).amax(dim=2)


class DGCNN(nn.Module):
    """``training_kernel``: "reference" (autograd) or "fast": on the CPU, each EdgeConv's BatchNorm,
    LeakyReLU and max over neighbours fused (pointdistill.models.edge_conv)."""

    def __init__(self, config: DGCNNConfig):
        super().__init__()
        self.config = config
        self.training_kernel = "reference"
        widths = [3, *config.edge_widths]
        self.edge_convs = nn.ModuleList(EdgeConv(c_in, c_out, config.k) for c_in, c_out in zip(widths[:-1], widths[1:]))
        self.embed = _point_block(sum(config.edge_widths), config.embed_width)
        head, c_in = [], 2 * config.embed_width
        for c_out in config.head_widths:
            head += [nn.Linear(c_in, c_out, bias=False), nn.BatchNorm1d(c_out), nn.LeakyReLU(NEGATIVE_SLOPE)]
            if config.dropout:
                head.append(nn.Dropout(config.dropout))
            c_in = c_out
        head.append(nn.Linear(c_in, config.num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, points: torch.Tensor) -> ModelOutput:
        """points: float32 [B, N, 3] -> ModelOutput(logits [B, C], pooled [B, 2 * embed_width]):
        the pooled feature is the embedding's max over the points, then its mean."""
        x, features = points, []
        for edge_conv in self.edge_convs:
            x = edge_conv(x, fused=self.training_kernel == "fast")
            features.append(x)
        embedded = per_point_layers(self.embed, torch.cat(features, dim=-1))  # [B, N, embed_width]
        pooled = torch.cat([embedded.amax(dim=1), embedded.mean(dim=1)], dim=-1)
        return ModelOutput(self.head(pooled), pooled)


@register_model("dgcnn", DGCNNConfig)
def dgcnn(config: DGCNNConfig) -> DGCNN:
    return DGCNN(config)
