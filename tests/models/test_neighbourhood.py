"""kNN and gathering: exact against plain pairwise distances, deterministic, memory-blocked."""

import numpy as np
import pytest
import torch

from pointdistill.models import neighbourhood
from pointdistill.models.neighbourhood import gather_points, knn


def _plain_knn(features: np.ndarray, k: int) -> np.ndarray:
    """Every pair's distance in float64, sorted: the k nearest of each point, [B, N, k]."""
    d = ((features[:, :, None, :] - features[:, None, :, :]) ** 2).sum(-1)
    return np.argsort(d, axis=-1, kind="stable")[..., :k]


@pytest.mark.parametrize("channels", [3, 17])
def test_knn_matches_plain_distances_in_every_block(channels, monkeypatch):
    monkeypatch.setattr(neighbourhood, "KNN_QUERY_ROWS", 7)  # several blocks, the last one short
    features = torch.randn(3, 50, channels, generator=torch.Generator().manual_seed(0))
    index = knn(features, 9)
    assert index.shape == (3, 50, 9) and index.dtype == torch.int64
    assert np.array_equal(index.numpy(), _plain_knn(features.double().numpy(), 9))
    assert torch.equal(index[..., 0], torch.arange(50).expand(3, 50))  # each point is its own nearest
    assert torch.equal(index, knn(features, 9))


def test_knn_refuses_more_neighbours_than_points():
    with pytest.raises(ValueError, match="k must be in 1..5"):
        knn(torch.zeros(1, 5, 3), 6)


def test_gather_points_picks_rows_and_passes_gradients():
    features = torch.randn(2, 6, 4, requires_grad=True)
    index = torch.tensor([[[0, 5], [2, 2]], [[1, 1], [3, 4]]])
    out = gather_points(features, index)
    assert out.shape == (2, 2, 2, 4)
    assert torch.equal(out[1, 1, 0], features[1, 3])
    out.sum().backward()
    assert features.grad[0, 2].tolist() == [2.0] * 4 and features.grad[0, 1].tolist() == [0.0] * 4
