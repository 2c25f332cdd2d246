"""Predicting with an exported network: point clouds from a dataset directory or an array file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointdistill.data import DatasetError, load_dataset
from pointdistill.engine.runtime import Engine


def read_clouds(source: str, num_points: int, split: str = "test") -> tuple[np.ndarray, np.ndarray | None]:
    """(points float32 [B, num_points, 3], labels int64 [B] or None) from a dataset directory (its
    ``split``), a ``.npy`` file ([B, N, 3] or one cloud [N, 3]) or a ``.npz`` file (``points``,
    optional ``labels``); the first ``num_points`` points of each cloud are used."""
    path = Path(source)
    if path.is_dir():
        dataset = load_dataset(source, split, num_points)
        return dataset.points, dataset.labels.astype(np.int64)
    try:
        if path.suffix == ".npy":
            points, labels = np.load(path, allow_pickle=False), None
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                if "points" not in npz.files:
                    raise DatasetError(f"{source}: no 'points' array (has {npz.files})")
                points = npz["points"]
                labels = npz["labels"].astype(np.int64) if "labels" in npz.files else None
        else:
            raise DatasetError(f"{source}: expected a dataset directory, a .npy or a .npz file")
    except (OSError, ValueError) as error:
        if isinstance(error, DatasetError):
            raise
        raise DatasetError(f"{source}: unreadable ({type(error).__name__}: {error})") from error
    if points.ndim == 2:
        points = points[None]
    if points.ndim != 3 or points.shape[2] != 3:
        raise DatasetError(f"{source}: points must be [B, N, 3] or [N, 3], got {list(points.shape)}")
    if not np.isfinite(points).all():
        bad = int(np.flatnonzero(~np.isfinite(points).all(axis=(1, 2)))[0])
        raise DatasetError(f"{source}: cloud {bad} has NaN or infinite coordinates")
    if points.shape[1] < num_points:
        raise DatasetError(f"{source}: clouds have {points.shape[1]} points, fewer than the {num_points} asked for")
    points = points[:, :num_points]
    return np.ascontiguousarray(points, dtype=np.float32), labels


def predict(engine: Engine, points: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Logits float32 [B, C] of every cloud, ``batch_size`` clouds per engine call."""
    return np.concatenate([engine(points[i:i + batch_size]) for i in range(0, len(points), batch_size)])
