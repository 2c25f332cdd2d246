"""The neighbourhood ops on the CPU: the compiled kernels against the torch forms.

    python benchmarks/neighbourhood.py [--points $MN40] [--rounds 5] [--threads 2]

Batch 32 at 1,024 points. PointNet++ SSG's two levels: farthest point sampling of 512 and then
128 centres, each with its ball query (32 points within 0.2, 64 within 0.4). DGCNN's graphs: the
20 nearest neighbours on the coordinates and in a 64-channel feature space (a fixed random
projection of the coordinates; the distances are the same matmul in both forms, the selection
differs). The rounds alternate the two forms so that both see the same machine load; the best
round counts. Prints seconds per batch of each, the ratio torch / compiled, and that both gave
the same indices.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from pointdistill.models import neighbourhood
from pointdistill.models.neighbourhood import ball_query, farthest_point_sample, gather_points, knn

LEVELS = [(512, 0.2, 32), (128, 0.4, 64)]  # centres, radius, neighbours


def _clouds(points_dir: str | None, batch: int = 32, num_points: int = 1024) -> torch.Tensor:
    if points_dir is None:
        cloud = torch.randn(batch, num_points, 3, generator=torch.Generator().manual_seed(0))
        return cloud / cloud.norm(dim=2, keepdim=True) * torch.rand(batch, num_points, 1) ** (1 / 3)
    with np.load(os.path.join(points_dir, "train.npz"), allow_pickle=False) as data:
        return torch.from_numpy(np.ascontiguousarray(data["points"][:batch, :num_points]))


def _levels(points: torch.Tensor) -> list[torch.Tensor]:
    """Both levels' sampling and grouping, as PointNet++ SSG runs them; their indices."""
    out, xyz = [], points
    for centres, radius, neighbours in LEVELS:
        taken = farthest_point_sample(xyz, centres)
        centre_xyz = gather_points(xyz, taken)
        out += [taken, ball_query(centre_xyz, xyz, radius, neighbours)]
        xyz = centre_xyz
    return out


def _graphs(points: torch.Tensor) -> list[torch.Tensor]:
    """DGCNN's kNN graphs (k = 20) on the coordinates and on 64 features."""
    projection = torch.randn(3, 64, generator=torch.Generator().manual_seed(1))
    return [knn(points, 20), knn(points @ projection, 20)]


OPS = {"PointNet++ SSG levels": _levels, "DGCNN kNN (k = 20)": _graphs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", help="a dataset directory with train.npz (default: random clouds in the unit ball)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    points = _clouds(args.points)
    compiled = neighbourhood._neighbourhood
    if compiled is None:
        raise SystemExit("pointdistill.models._neighbourhood is not built")
    print(f"batch 32 x 1024 points, SSG levels {LEVELS}, torch threads {args.threads}, "
          f"clouds: {args.points or 'random'}; best of {args.rounds} alternating rounds")
    print("| op | torch s per batch | compiled s per batch | speed-up | same indices |\n|---|---|---|---|---|")
    for name, op in OPS.items():
        best = {"compiled": float("inf"), "torch": float("inf")}
        indices = {}
        for _ in range(args.rounds):
            for form in ("compiled", "torch"):
                neighbourhood._neighbourhood = compiled if form == "compiled" else None
                neighbourhood._said_not_built = True
                started = time.perf_counter()
                indices[form] = op(points)
                best[form] = min(best[form], time.perf_counter() - started)
        neighbourhood._neighbourhood = compiled
        same = all(torch.equal(a, b) for a, b in zip(indices["compiled"], indices["torch"]))
        print(f"| {name} | {best['torch']:.4f} | {best['compiled']:.4f} | {best['torch'] / best['compiled']:.1f}x | {same} |")


if __name__ == "__main__":
    main()
