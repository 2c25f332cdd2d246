"""Neighbourhoods of points: k nearest neighbours in any feature space, farthest point sampling,
ball query, and gathering by index.

Used by the graph and set-abstraction backbones (DGCNN's EdgeConv, PointNet++'s set abstraction).
On the CPU, farthest point sampling, ball query and kNN's selection run compiled kernels
(_neighbourhood.c, on torch's OpenMP threads); elsewhere, or where the extension is not built
(said once in the log), the torch forms below. Deterministic: the same points give the same indices on a device, ties
going to the lowest index.
Exact against plain references (tests/models/test_neighbourhood.py) wherever the distances that
decide differ by more than float32 rounding (the k-th and (k+1)-th neighbour, a point and the
ball's radius, the two farthest candidates).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from pointdistill.binary.popcount import threads_for

try:
    from pointdistill.models import _neighbourhood
except ImportError:  # not built: the torch forms everywhere
    _neighbourhood = None

_log = logging.getLogger(__name__)
_said_not_built = False

# Query rows per distance block: [B, rows, N] float32 stays near 32 MB at B = 32, N = 1024.
QUERY_ROWS = 256


def pairwise_sq_distances(queries: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances float32 [B, M, N] between queries [B, M, C] and points [B, N, C],
    as |q|^2 - 2 q.p + |p|^2 (one batched matmul), clamped at 0: formed in place, in that order."""
    distances = torch.bmm(queries, points.transpose(1, 2)).mul_(-2)
    return distances.add_(queries.pow(2).sum(-1, keepdim=True)).add_(points.pow(2).sum(-1)[:, None, :]).clamp_min_(0)


@torch.no_grad()
def knn(features: torch.Tensor, k: int) -> torch.Tensor:
    """The k nearest points of every point, nearest first (a point is at distance 0 from itself:
    its own first neighbour, unless it has exact duplicates).

    features: float [B, N, C] (coordinates or any per-point features); k <= N.
    Returns int64 [B, N, k] indices into N. Computed in blocks of QUERY_ROWS query points, so
    memory grows as B * QUERY_ROWS * N, not B * N * N; on the CPU the k nearest of each block's
    distances are selected by the compiled kernel, elsewhere by a stable sort: equal distances in
    index order on both."""
    batch, n, _ = features.shape
    if not 1 <= k <= n:
        raise ValueError(f"knn: k must be in 1..{n} (the points per cloud), got {k}")
    features = features.detach()
    compiled = _compiled_applies(features)
    blocks = []
    for start in range(0, n, QUERY_ROWS):
        distances = pairwise_sq_distances(features[:, start:start + QUERY_ROWS], features)  # [B, rows, N]
        if compiled:
            nearest = np.empty((*distances.shape[:2], k), np.int64)
            _neighbourhood.nearest_k(np.ascontiguousarray(distances.numpy()), batch, distances.shape[1], n, k, nearest,
                                     threads_for(batch * distances.shape[1]))
            blocks.append(torch.from_numpy(nearest))
        else:
            blocks.append(distances.sort(dim=-1, stable=True).indices[..., :k])  # topk's ties are in no set order
    return torch.cat(blocks, dim=1)


def _compiled_applies(*tensors: torch.Tensor) -> bool:
    """True where the compiled kernels take these tensors (float32 on the CPU, built)."""
    global _said_not_built
    if not all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors):
        return False
    if _neighbourhood is None and not _said_not_built:
        _log.warning("pointdistill.models._neighbourhood is not built: kNN, farthest point sampling and ball query "
                     "take their slower torch forms (reinstall the package: pip install -e .)")
        _said_not_built = True
    return _neighbourhood is not None


@torch.no_grad()
def farthest_point_sample(points: torch.Tensor, m: int) -> torch.Tensor:
    """m of each cloud's points, each the farthest from those already taken, starting at point 0
    (ours: PointNet++'s reference code starts at a random point; 0 makes the model a function
    of its input). Ties take the lowest index.

    points: float [B, N, 3]; 1 <= m <= N. Returns int64 [B, m] indices into N, in the order taken.
    m sequential steps, each one pass over the B x N distances."""
    batch, n, _ = points.shape
    if not 1 <= m <= n:
        raise ValueError(f"farthest_point_sample: m must be in 1..{n} (the points per cloud), got {m}")
    points = points.detach()
    if _compiled_applies(points):
        taken = np.empty((batch, m), np.int64)
        _neighbourhood.farthest_point_sample(np.ascontiguousarray(points.numpy()), batch, n, m, taken,
                                             threads_for(batch))
        return torch.from_numpy(taken)
    taken = torch.zeros(batch, m, dtype=torch.int64, device=points.device)
    nearest = torch.full((batch, n), float("inf"), dtype=points.dtype, device=points.device)
    rows = torch.arange(batch, device=points.device)
    for step in range(1, m):
        offset = points - points[rows, taken[:, step - 1]][:, None, :]  # [B, N, 3]
        torch.minimum(nearest, offset.square().sum(-1), out=nearest)
        taken[:, step] = nearest.argmax(dim=1)  # the first of equal maxima
    return taken


@torch.no_grad()
def ball_query(centres: torch.Tensor, points: torch.Tensor, radius: float, k: int) -> torch.Tensor:
    """For every centre, the first k points (in index order) within ``radius`` of it, the list
    padded with its first point where fewer are inside (PointNet++'s grouping).

    centres: float [B, M, 3]; points: float [B, N, 3]; radius > 0 (inclusive); 1 <= k <= N.
    Returns int64 [B, M, k] indices into N. A centre with no point inside its ball is refused
    (a centre taken from the cloud is always inside its own). The compiled kernel measures each
    pair's distance directly; the torch form, memory-blocked like ``knn``, by the matmul
    identity: the two agree but where a distance is within float32 rounding of the radius."""
    batch, n, _ = points.shape
    if not 1 <= k <= n:
        raise ValueError(f"ball_query: k must be in 1..{n} (the points per cloud), got {k}")
    if not radius > 0:
        raise ValueError(f"ball_query: radius must be positive, got {radius}")
    points, centres = points.detach(), centres.detach()
    if _compiled_applies(points, centres):
        group = np.empty((batch, centres.shape[1], k), np.int64)
        empty = _neighbourhood.ball_query(np.ascontiguousarray(centres.numpy()), np.ascontiguousarray(points.numpy()),
                                          batch, centres.shape[1], n, radius * radius, k, group, threads_for(batch))
        if empty:
            raise ValueError(f"ball_query: a centre has no point within radius {radius}")
        return torch.from_numpy(group)
    order = torch.arange(n, device=points.device)
    blocks = []
    for start in range(0, centres.shape[1], QUERY_ROWS):
        inside = pairwise_sq_distances(centres[:, start:start + QUERY_ROWS], points) <= radius * radius
        # the k lowest indices inside: outside points rank after every inside one
        first = torch.where(inside, order, n).topk(k, dim=-1, largest=False, sorted=True).values
        if bool((first[..., 0] == n).any()):
            raise ValueError(f"ball_query: a centre has no point within radius {radius}")
        blocks.append(torch.where(first == n, first[..., :1], first))
    return torch.cat(blocks, dim=1)


def gather_points(features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """features [B, N, C] at index int64 [B, ...] -> [B, ..., C] (differentiable in features)."""
    batch, _, channels = features.shape
    flat = index.reshape(batch, -1)
    gathered = torch.gather(features, 1, flat[..., None].expand(-1, -1, channels))
    return gathered.reshape(*index.shape, channels)
