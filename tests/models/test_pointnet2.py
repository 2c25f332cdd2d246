"""The PointNet++ (SSG) teacher: set abstraction against a plain computation, training, rebuilding
from a JSON spec, recording and replaying, train-teacher options."""

import json
from dataclasses import replace

import pytest
import torch

from pointdistill.models import PointNet2Config, create_model, load_checkpoint, model_spec
from pointdistill.models.neighbourhood import farthest_point_sample
from pointdistill.models.per_point import per_point_layers
from pointdistill.models.teacher_options import TeacherOptions, teacher_spec
from pointdistill.train import TeacherJob, TrainConfig, run_teacher_job
from teacher_checks import assert_recorded_and_replayed, assert_trains_and_rebuilds

SMALL = PointNet2Config(num_classes=4, centres=(16, 4), radii=(0.5, 1.0), neighbours=(6, 8),
                        level_widths=((8, 16), (16, 24)), global_widths=(24, 32), head_widths=(16,))


def _clouds(batch=8, n=48, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(batch) % 4
    points = torch.randn(batch, n, 3, generator=generator) * (0.3 + 0.2 * labels[:, None, None])
    return points, labels


def test_a_set_abstraction_pools_its_mlp_over_each_ball_around_the_farthest_points():
    model = create_model(model_spec("pointnet2_ssg", SMALL)).eval()
    points, _ = _clouds()
    level = model.levels[0]
    with torch.no_grad():
        centres, features = level(points, None)
        for b in (0, 5):
            taken = farthest_point_sample(points[b:b + 1], 16)[0]
            assert torch.equal(centres[b], points[b, taken])
            for m in (0, 9):
                offsets = points[b] - centres[b, m]
                ball = torch.nonzero(offsets.square().sum(-1) <= 0.5 ** 2)[:6, 0]  # the first 6 inside
                expected = per_point_layers(level.mlp, offsets[ball][None]).amax(dim=1)[0]
                torch.testing.assert_close(features[b, m], expected, rtol=1e-5, atol=1e-6)


def test_pointnet2_pools_the_global_level_and_is_deterministic():
    model = create_model(model_spec("pointnet2_ssg", SMALL)).eval()
    points, _ = _clouds()
    with torch.no_grad():
        out = model(points)
        assert out.logits.shape == (8, 4) and out.pooled.shape == (8, 32)
        torch.testing.assert_close(model.head(out.pooled), out.logits)
        assert torch.equal(model(points).pooled, out.pooled)


def test_pointnet2_trains_with_decreasing_loss_and_rebuilds_from_its_json_spec():
    assert create_model(json.loads(json.dumps(model_spec("pointnet2_ssg", SMALL)))).config == SMALL  # nested widths
    assert_trains_and_rebuilds(model_spec("pointnet2_ssg", SMALL), *_clouds())


def test_pointnet2_refuses_more_centres_than_points_and_inconsistent_levels():
    model = create_model(model_spec("pointnet2_ssg", SMALL))
    with pytest.raises(ValueError, match="samples 16 centres from clouds of 10 points"):
        model(torch.randn(2, 10, 3))
    with pytest.raises(ValueError, match="one entry per local level"):
        replace(SMALL, radii=(0.5,))
    with pytest.raises(ValueError, match="must not grow"):
        replace(SMALL, centres=(4, 16))


def test_a_trained_pointnet2_teacher_is_recorded_and_replayed(shapes_dir, tmp_path):
    spec = model_spec("pointnet2_ssg", replace(SMALL, num_classes=12))
    assert_recorded_and_replayed(spec, shapes_dir, tmp_path, pooled_width=SMALL.global_widths[-1])


def test_teacher_options_set_pointnet2_centres_and_refuse_the_rest():
    spec = teacher_spec("pointnet2_ssg", 4, TeacherOptions(centres=(64, 16), head_widths=(32,)))
    assert (spec["centres"], spec["head_widths"], spec["global_widths"]) == ([64, 16], [32], [256, 512, 1024])
    with pytest.raises(ValueError, match="teacher 'pointnet2_ssg' takes no point_widths, neighbours"):
        teacher_spec("pointnet2_ssg", 4, TeacherOptions(point_widths=(8, 16), neighbours=3))
    with pytest.raises(ValueError, match="one count per local level"):
        teacher_spec("pointnet2_ssg", 4, TeacherOptions(centres=(64,)))
    with pytest.raises(ValueError, match="teacher 'pointnet' takes no centres"):
        teacher_spec("pointnet", 4, TeacherOptions(centres=(64, 16)))


def test_train_teacher_trains_a_pointnet2(shapes_dir, tmp_path):
    job = TeacherJob(dataset=shapes_dir, out=str(tmp_path / "pointnet2.pt"), num_points=64, model="pointnet2_ssg",
                     options=TeacherOptions(centres=(16, 4), head_widths=(16,)),
                     train=TrainConfig(epochs=1, batch_size=16, device="cpu"))
    result = run_teacher_job(job, progress=False)
    checkpoint = load_checkpoint(result["outputs"]["checkpoint"])
    assert checkpoint.spec["name"] == "pointnet2_ssg" and checkpoint.spec["centres"] == [16, 4]
    assert 0 <= result["test_overall_accuracy"] <= 1
