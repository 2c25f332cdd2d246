"""The in-memory labelled point-cloud set every reader returns, its validation and fingerprint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


class DatasetError(ValueError):
    """A dataset file or array is not what pointdistill expects; the message names where."""


@dataclass(frozen=True)
class PointCloudSet:
    """One split of a labelled point-cloud dataset.

    points: float32 [N, P, 3], unitless coordinates (unit-sphere normalised by convention).
    labels: int64 [N], indices into ``class_names``.
    """

    name: str
    split: str
    points: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.points.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def fingerprint(self) -> str:
        """sha256 (hex) over the points used, the labels and the class names; see store/README.md."""
        return dataset_fingerprint(self.points, self.labels, self.class_names)


def dataset_fingerprint(points: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]) -> str:
    """sha256 over: the ASCII header "N,P,3", the points as little-endian float32 (C order),
    the labels as little-endian int64, and the class names joined by "\\n" (UTF-8)."""
    digest = hashlib.sha256()
    digest.update(f"{points.shape[0]},{points.shape[1]},{points.shape[2]}".encode())
    digest.update(np.ascontiguousarray(points, dtype="<f4").tobytes())
    digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    digest.update("\n".join(class_names).encode())
    return digest.hexdigest()


def checked_point_cloud_set(
    *,
    name: str,
    split: str,
    points: np.ndarray,
    labels: np.ndarray,
    class_names: tuple[str, ...] | list[str],
    num_points: int,
    source: str,
) -> PointCloudSet:
    """Validate raw arrays read from ``source`` and cut each shape to its first ``num_points``.

    Raises DatasetError naming ``source``, the sample index and what was expected.
    """
    points = np.asarray(points)
    labels = np.asarray(labels)
    class_names = tuple(str(c) for c in class_names)
    if points.ndim != 3 or points.shape[2] != 3:
        raise DatasetError(f"{source}: points must have shape [N, P, 3], got {list(points.shape)}")
    if labels.ndim != 1:
        raise DatasetError(f"{source}: labels must have shape [N], got {list(labels.shape)}")
    if points.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{source}: {points.shape[0]} point clouds but {labels.shape[0]} labels (lengths must match)"
        )
    if points.shape[0] == 0:
        raise DatasetError(f"{source}: holds no shapes (an empty split cannot be trained or evaluated on)")
    if num_points < 1:
        raise DatasetError(f"num_points must be >= 1, got {num_points}")
    if points.shape[1] < num_points:
        raise DatasetError(
            f"{source}: shapes have {points.shape[1]} points, fewer than the {num_points} asked for"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{source}: labels must be integers, got dtype {labels.dtype}")
    if not class_names:
        raise DatasetError(f"{source}: no class names")
    used = np.ascontiguousarray(points[:, :num_points, :], dtype=np.float32)
    finite = np.isfinite(used).all(axis=(1, 2))
    if not finite.all():
        index = int(np.flatnonzero(~finite)[0])
        raise DatasetError(
            f"{source}: sample {index} has NaN or infinite coordinates "
            f"({int((~finite).sum())} bad samples in all); expected finite float32 points"
        )
    bad_label = (labels < 0) | (labels >= len(class_names))
    if bad_label.any():
        index = int(np.flatnonzero(bad_label)[0])
        raise DatasetError(
            f"{source}: sample {index} has label {int(labels[index])}, "
            f"expected 0..{len(class_names) - 1} ({len(class_names)} classes)"
        )
    return PointCloudSet(
        name=name,
        split=split,
        points=used,
        labels=labels.astype(np.int64),
        class_names=class_names,
        source=source,
    )
