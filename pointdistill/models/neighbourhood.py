"""Neighbourhoods of points: k nearest neighbours in any feature space, and gathering by index.

Used by the graph and set-abstraction backbones (DGCNN's EdgeConv). Deterministic: the same
features give the same indices on a device. Exact against a plain pairwise-distance reference
(tests/models/test_neighbourhood.py) wherever the k-th and (k+1)-th distances differ by more than
float32 rounding.
"""

from __future__ import annotations

import torch

# Query rows per distance block: [B, rows, N] float32 stays near 32 MB at B = 32, N = 1024.
KNN_QUERY_ROWS = 256


def pairwise_sq_distances(queries: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances float32 [B, M, N] between queries [B, M, C] and points [B, N, C],
    as |q|^2 - 2 q.p + |p|^2 (one batched matmul), clamped at 0."""
    inner = torch.bmm(queries, points.transpose(1, 2))
    return (queries.pow(2).sum(-1, keepdim=True) - 2 * inner + points.pow(2).sum(-1)[:, None, :]).clamp_min_(0)


@torch.no_grad()
def knn(features: torch.Tensor, k: int) -> torch.Tensor:
    """The k nearest points of every point, nearest first (a point is at distance 0 from itself:
    its own first neighbour, unless it has exact duplicates).

    features: float [B, N, C] (coordinates or any per-point features); k <= N.
    Returns int64 [B, N, k] indices into N. Computed in blocks of KNN_QUERY_ROWS query points, so
    memory grows as B * KNN_QUERY_ROWS * N, not B * N * N."""
    batch, n, _ = features.shape
    if not 1 <= k <= n:
        raise ValueError(f"knn: k must be in 1..{n} (the points per cloud), got {k}")
    features = features.detach()
    blocks = [pairwise_sq_distances(features[:, start:start + KNN_QUERY_ROWS], features)
              .topk(k, dim=-1, largest=False, sorted=True).indices
              for start in range(0, n, KNN_QUERY_ROWS)]
    return torch.cat(blocks, dim=1)


def gather_points(features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """features [B, N, C] at index int64 [B, ...] -> [B, ..., C] (differentiable in features)."""
    batch, _, channels = features.shape
    flat = index.reshape(batch, -1)
    gathered = torch.gather(features, 1, flat[..., None].expand(-1, -1, channels))
    return gathered.reshape(*index.shape, channels)
