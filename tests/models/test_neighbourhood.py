"""kNN, farthest point sampling, ball query and gathering: exact against plain loops, on the
compiled CPU kernels and the torch forms, deterministic, memory-blocked, independent of threads."""

import numpy as np
import pytest
import torch

from pointdistill.models import neighbourhood
from pointdistill.models.neighbourhood import gather_points, knn

PATHS = ["compiled", "torch"]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    """Each test below runs on the compiled CPU kernels and on the torch forms."""
    if request.param == "torch":
        monkeypatch.setattr(neighbourhood, "_neighbourhood", None)
        monkeypatch.setattr(neighbourhood, "_said_not_built", True)  # forced: nothing to warn about
    else:
        assert neighbourhood._neighbourhood is not None, "the _neighbourhood extension is not built"
    return request.param


def _plain_knn(features: np.ndarray, k: int) -> np.ndarray:
    """Every pair's distance in float64, sorted: the k nearest of each point, [B, N, k]."""
    d = ((features[:, :, None, :] - features[:, None, :, :]) ** 2).sum(-1)
    return np.argsort(d, axis=-1, kind="stable")[..., :k]


@pytest.mark.parametrize("channels", [3, 17])
def test_knn_matches_plain_distances_in_every_block(path, channels, monkeypatch):
    monkeypatch.setattr(neighbourhood, "QUERY_ROWS", 7)  # several blocks, the last one short
    features = torch.randn(3, 50, channels, generator=torch.Generator().manual_seed(0))
    index = knn(features, 9)
    assert index.shape == (3, 50, 9) and index.dtype == torch.int64
    assert np.array_equal(index.numpy(), _plain_knn(features.double().numpy(), 9))
    assert torch.equal(index[..., 0], torch.arange(50).expand(3, 50))  # each point is its own nearest
    assert torch.equal(index, knn(features, 9))


def test_compiled_knn_puts_equal_distances_in_index_order():
    """Duplicated points are at exactly the same distance from every query: the compiled
    selection lists them in index order, also where only some of them make the k nearest."""
    features = torch.randn(2, 30, 5, generator=torch.Generator().manual_seed(2))
    features[:, [4, 9, 21]] = features[:, 17:18]  # four copies of point 17
    index = knn(features, 6)
    for b in range(2):
        for i in range(30):
            row = index[b, i].tolist()
            copies = [j for j in row if j in (4, 9, 17, 21)]
            assert copies == sorted(copies) and (len(copies) in (0, 4) or copies == [4, 9, 17, 21][:len(copies)])


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


def _plain_farthest_points(points: np.ndarray, m: int) -> np.ndarray:
    """One cloud, float64, in plain loops: start at point 0, then the farthest from those taken."""
    taken = [0]
    for _ in range(1, m):
        nearest = [min(((p - points[t]) ** 2).sum() for t in taken) for p in points]
        taken.append(int(np.argmax(nearest)))
    return np.array(taken)


def test_farthest_point_sampling_matches_a_plain_loop(path):
    points = torch.rand(3, 40, 3, generator=torch.Generator().manual_seed(1))
    index = neighbourhood.farthest_point_sample(points, 12)
    assert index.shape == (3, 12) and index.dtype == torch.int64
    for cloud, taken in zip(points.double().numpy(), index.numpy()):
        assert taken.tolist() == _plain_farthest_points(cloud, 12).tolist()
    assert torch.equal(index, neighbourhood.farthest_point_sample(points, 12))


def test_farthest_point_sampling_takes_the_lowest_index_among_ties_and_every_point_once(path):
    # the corners of a square, each twice: after corner 0 the opposite corner (2), then 1 and 3 tie
    square = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    points = torch.cat([square, square])[None]
    assert neighbourhood.farthest_point_sample(points, 4)[0].tolist() == [0, 2, 1, 3]
    distinct = torch.rand(1, 9, 3, generator=torch.Generator().manual_seed(2))
    assert sorted(neighbourhood.farthest_point_sample(distinct, 9)[0].tolist()) == list(range(9))
    with pytest.raises(ValueError, match="m must be in 1..9"):
        neighbourhood.farthest_point_sample(distinct, 10)


def _plain_ball_query(centres: np.ndarray, points: np.ndarray, radius: float, k: int) -> np.ndarray:
    """One cloud, float64: the first k indices within the radius, padded with the first."""
    out = []
    for c in centres:
        inside = [i for i, p in enumerate(points) if ((p - c) ** 2).sum() <= radius ** 2][:k]
        out.append(inside + [inside[0]] * (k - len(inside)))
    return np.array(out)


def test_ball_query_matches_a_plain_loop_in_every_block(path, monkeypatch):
    monkeypatch.setattr(neighbourhood, "QUERY_ROWS", 4)
    points = torch.rand(2, 60, 3, generator=torch.Generator().manual_seed(3))
    centres = points[:, :10]  # every centre is a point of its cloud
    index = neighbourhood.ball_query(centres, points, 0.3, 8)
    assert index.shape == (2, 10, 8) and index.dtype == torch.int64
    for c, p, got in zip(centres.double().numpy(), points.double().numpy(), index.numpy()):
        assert got.tolist() == _plain_ball_query(c, p, 0.3, 8).tolist()
    assert (index[..., 0] <= torch.arange(10)).all()  # a centre finds itself at the latest
    padded = neighbourhood.ball_query(centres, points, 0.05, 8)  # few inside: padded with the first
    assert (padded == padded[..., :1]).any(dim=-1).all()


def test_ball_query_refuses_an_empty_ball_and_bad_arguments(path):
    points = torch.zeros(1, 5, 3)
    with pytest.raises(ValueError, match="no point within radius 0.1"):
        neighbourhood.ball_query(torch.ones(1, 1, 3), points, 0.1, 2)
    with pytest.raises(ValueError, match="k must be in 1..5"):
        neighbourhood.ball_query(points, points, 0.1, 6)
    with pytest.raises(ValueError, match="radius must be positive"):
        neighbourhood.ball_query(points, points, 0.0, 2)


def test_the_compiled_kernels_agree_with_the_torch_forms_at_any_thread_count(monkeypatch):
    points = torch.rand(5, 1024, 3, generator=torch.Generator().manual_seed(4)) * 2 - 1
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 3):
            torch.set_num_threads(count)
            taken = neighbourhood.farthest_point_sample(points, 512)
            results.append((taken, neighbourhood.ball_query(gather_points(points, taken), points, 0.2, 32),
                            knn(points, 20)))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(one, other) for one, other in zip(*results))
    monkeypatch.setattr(neighbourhood, "_neighbourhood", None)
    monkeypatch.setattr(neighbourhood, "_said_not_built", True)
    assert torch.equal(neighbourhood.farthest_point_sample(points, 512), results[0][0])
    assert torch.equal(knn(points, 20), results[0][2])
