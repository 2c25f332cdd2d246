"""A validation split carved from a training split, for choosing settings without the test set."""

from __future__ import annotations

import dataclasses

import numpy as np

from pointdistill.config_checks import check_fraction
from pointdistill.data.pointcloud import DatasetError, PointCloudSet

# The held-out shapes depend only on the labels and the fraction, never on a run's seed: runs that
# compare settings (or seeds) are validated on the same shapes.
VALIDATION_SEED = 20211


def validation_indices(labels: np.ndarray, fraction: float) -> np.ndarray:
    """int64 [V], ascending: the shapes held out for validation, ``round(fraction * n_c)`` of each
    class c with n_c shapes (stratified), drawn with a fixed seed. A class keeps at least one
    training shape. ``fraction`` in [0, 1); 0 holds out nothing."""
    check_fraction("validation_indices", fraction=fraction)
    rng = np.random.default_rng(VALIDATION_SEED)
    held_out = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        count = min(int(round(fraction * members.size)), members.size - 1)
        held_out.append(rng.permutation(members)[:count])
    return np.sort(np.concatenate(held_out)).astype(np.int64) if held_out else np.zeros(0, np.int64)


def validation_subset(train: PointCloudSet, indices: np.ndarray) -> PointCloudSet:
    """The shapes ``indices`` of ``train`` as the split "validation" (un-augmented clouds)."""
    if indices.size == 0:
        raise DatasetError(f"{train.source}: the validation split holds no shapes; raise the fraction")
    return dataclasses.replace(train, split="validation", points=train.points[indices],
                               labels=train.labels[indices])
