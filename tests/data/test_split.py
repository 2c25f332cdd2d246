"""The validation split carved from a training split."""

import numpy as np
import pytest

from pointdistill.data import load_dataset
from pointdistill.data.pointcloud import DatasetError
from pointdistill.data.split import validation_indices, validation_subset


def test_validation_split_is_stratified_fixed_and_keeps_a_training_shape_per_class():
    labels = np.repeat(np.arange(4), [10, 20, 3, 1])
    held_out = validation_indices(labels, 0.2)
    counts = np.bincount(labels[held_out], minlength=4)
    assert counts.tolist() == [2, 4, 1, 0]  # round(0.2 n), the single-shape class keeps its shape
    assert np.array_equal(held_out, np.sort(np.unique(held_out)))
    assert np.array_equal(held_out, validation_indices(labels, 0.2))  # the same shapes in every run
    assert validation_indices(labels, 0.0).size == 0
    assert np.bincount(labels[validation_indices(labels, 0.99)], minlength=4).tolist() == [9, 19, 2, 0]


@pytest.mark.parametrize("fraction", [-0.1, 1.0, float("nan")])
def test_validation_fraction_outside_zero_to_one_is_refused(fraction):
    with pytest.raises(ValueError, match=r"^validation_indices\.fraction must be"):
        validation_indices(np.zeros(10, np.int64), fraction)


def test_validation_subset_holds_the_chosen_clouds_unaugmented(shapes_dir):
    train = load_dataset(shapes_dir, "train", 64)
    held_out = validation_indices(train.labels, 0.25)
    subset = validation_subset(train, held_out)
    assert subset.split == "validation" and subset.class_names == train.class_names
    assert np.array_equal(subset.points, train.points[held_out])
    assert np.array_equal(subset.labels, train.labels[held_out])
    with pytest.raises(DatasetError, match="holds no shapes"):
        validation_subset(train, held_out[:0])
