"""The DGCNN teacher: its pooled feature, training, rebuilding from a checkpoint, recording."""

from dataclasses import replace

import pytest
import torch

from pointdistill.models import DGCNNConfig, create_model, load_checkpoint, model_spec
from pointdistill.models.teacher_options import TeacherOptions, teacher_spec
from pointdistill.train import TeacherJob, TrainConfig, run_teacher_job
from teacher_checks import assert_recorded_and_replayed, assert_trains_and_rebuilds

SMALL = DGCNNConfig(num_classes=4, k=5, edge_widths=(8, 8, 16), embed_width=32, head_widths=(16,))


def _clouds(batch=8, n=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(batch) % 4
    points = torch.randn(batch, n, 3, generator=generator) * (1 + labels[:, None, None])  # size tells the class
    return points, labels


def test_dgcnn_pools_max_and_mean_of_its_embedding():
    model = create_model(model_spec("dgcnn", SMALL)).eval()
    points, _ = _clouds()
    out = model(points)
    assert out.logits.shape == (8, 4) and out.pooled.shape == (8, 64)
    shuffled = model(points[:, torch.randperm(points.shape[1])])  # a set function of the points
    torch.testing.assert_close(shuffled.pooled, out.pooled, rtol=1e-5, atol=1e-5)


def test_dgcnn_trains_with_decreasing_loss_and_rebuilds_from_its_spec():
    assert_trains_and_rebuilds(model_spec("dgcnn", SMALL), *_clouds())


def test_a_trained_dgcnn_teacher_is_recorded_and_replayed(shapes_dir, tmp_path):
    spec = model_spec("dgcnn", replace(SMALL, num_classes=12))
    assert_recorded_and_replayed(spec, shapes_dir, tmp_path, pooled_width=2 * SMALL.embed_width)


def test_teacher_options_build_each_teacher_and_refuse_what_it_does_not_take():
    dgcnn = teacher_spec("dgcnn", 4, TeacherOptions(point_widths=(8, 16, 32), neighbours=7))
    assert (dgcnn["edge_widths"], dgcnn["embed_width"], dgcnn["k"]) == ([8, 16], 32, 7)
    assert teacher_spec("pointnet", 4, TeacherOptions())["point_widths"] == [64, 64, 64, 128, 1024]
    with pytest.raises(ValueError, match="teacher 'dgcnn' takes no input_transform"):
        teacher_spec("dgcnn", 4, TeacherOptions(input_transform=True))
    with pytest.raises(ValueError, match="teacher 'pointnet' takes no neighbours"):
        teacher_spec("pointnet", 4, TeacherOptions(neighbours=3))
    with pytest.raises(ValueError, match="'binary_pointnet' is not a teacher"):
        teacher_spec("binary_pointnet", 4, TeacherOptions())


def test_train_teacher_trains_a_dgcnn(shapes_dir, tmp_path):
    job = TeacherJob(dataset=shapes_dir, out=str(tmp_path / "dgcnn.pt"), num_points=64, model="dgcnn",
                     options=TeacherOptions(point_widths=(8, 8, 32), head_widths=(16,), neighbours=5),
                     train=TrainConfig(epochs=1, batch_size=16, device="cpu"))
    result = run_teacher_job(job, progress=False)
    checkpoint = load_checkpoint(result["outputs"]["checkpoint"])
    assert checkpoint.spec["name"] == "dgcnn" and checkpoint.spec["k"] == 5
    assert 0 <= result["test_overall_accuracy"] <= 1


def test_edgeconv_splits_its_linear_layer_over_centres_and_neighbours_exactly():
    """(W_c - W_o) x_i + W_o x_j is the layer on the edges [x_i, x_j - x_i], in train and eval mode."""
    from pointdistill.models.dgcnn import EdgeConv, edge_features
    from pointdistill.models.per_point import per_point_layers

    torch.manual_seed(0)
    conv, x = EdgeConv(6, 16, k=5), torch.randn(3, 30, 6)
    for train in (True, False):
        conv.train(train)
        edges = edge_features(x, 5)
        plain = per_point_layers(conv.mlp, edges.reshape(3, 150, 12)).view(3, 30, 5, 16).amax(dim=2)
        torch.testing.assert_close(conv(x), plain, rtol=1e-5, atol=1e-5)
