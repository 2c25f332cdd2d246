import numpy as np
import pytest
import torch

from pointdistill.augment import AugmentPolicy, apply, augmentation_params, params_for_shapes


def test_params_are_deterministic_and_independent_of_chunking():
    policy = AugmentPolicy()
    whole = params_for_shapes(policy, seed=3, shape_start=0, shape_stop=50, augmentations=6)
    chunks = np.concatenate([params_for_shapes(policy, 3, s, min(s + 7, 50), 6) for s in range(0, 50, 7)])
    single = augmentation_params(policy, 3, [42], [5])[0]
    assert np.array_equal(whole, params_for_shapes(policy, 3, 0, 50, 6))
    assert np.array_equal(whole, chunks)
    assert np.array_equal(whole[42, 5], single)
    # A record's parameters do not depend on how many augmentations the store holds.
    assert np.array_equal(whole[:, :4], params_for_shapes(policy, 3, 0, 50, 4))
    assert not np.array_equal(whole, params_for_shapes(policy, 4, 0, 50, 6))


def test_params_fill_the_policy_ranges():
    policy = AugmentPolicy(scale_low=0.5, scale_high=2.0, translate=0.3)
    params = params_for_shapes(policy, 0, 0, 2000, 5).reshape(-1, 6)
    assert params.dtype == np.float32
    assert params[:, :3].min() >= 0.5 and params[:, :3].max() <= 2.0
    assert params[:, 3:].min() >= -0.3 and params[:, 3:].max() <= 0.3
    assert np.allclose(params[:, :3].mean(0), 1.25, atol=0.02)
    assert np.allclose(params[:, 3:].mean(0), 0.0, atol=0.01)
    # Axes are drawn independently (anisotropic scale).
    assert abs(np.corrcoef(params[:, 0], params[:, 1])[0, 1]) < 0.05


def test_apply_matches_hand_computed_transform():
    points = torch.tensor([[[1.0, 2.0, 3.0], [-1.0, 0.0, 0.5]]])
    params = torch.tensor([[2.0, 0.5, 1.0, 0.1, -0.2, 0.0]])
    expected = torch.tensor([[[2.1, 0.8, 3.0], [-1.9, -0.2, 0.5]]])
    assert torch.allclose(apply(points, params), expected)


def test_apply_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"params must be \[2, 6\]"):
        apply(torch.zeros(2, 5, 3), torch.zeros(3, 6))
    with pytest.raises(ValueError, match=r"points must be \[B, N, 3\]"):
        apply(torch.zeros(2, 5), torch.zeros(2, 6))


def test_policy_validates_ranges():
    with pytest.raises(ValueError, match="scale_low"):
        AugmentPolicy(scale_low=2.0, scale_high=1.0)


@pytest.mark.parametrize("field, value, message", [
    ("scale_low", 0.0, r"AugmentPolicy\.scale_low must be > 0"),
    ("scale_high", float("inf"), r"AugmentPolicy\.scale_high must be a finite number"),
    ("translate", float("nan"), r"AugmentPolicy\.translate must be a finite number"),
    ("translate", -0.1, r"AugmentPolicy\.translate must be >= 0"),
])
def test_policy_refuses_a_bad_field_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        AugmentPolicy(**{field: value})
