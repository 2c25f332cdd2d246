"""Binary PointNet++ and DGCNN students: every quantizer x aggregation trains; EMA's offset is
the one for the elements each aggregation pools; which layers are float; replay from a store of
their own teacher; export refuses them with the reason."""

import dataclasses

import pytest
import torch

from pointdistill.binary import QUANTIZERS, BinaryLinear, ema_offset, initialize_binary_scales, set_training_progress
from pointdistill.distill import StudentJob, StudentTrainConfig, run_student_job, student_spec
from pointdistill.engine.export import ExportError, export_student
from pointdistill.losses import LossConfig
from pointdistill.models import (
    MODELS, Checkpoint, DGCNNConfig, PointNet2Config, create_model, load_checkpoint, model_spec,
)
from pointdistill.models.binary_dgcnn import BinaryDGCNNConfig
from pointdistill.models.binary_pointnet import BinaryPointNet, BinaryPointNetConfig, match_channels
from pointdistill.models.binary_pointnet2 import BinaryPointNet2Config
from pointdistill.models.dgcnn import edge_features
from pointdistill.models.per_point import per_point_layers
from pointdistill.models.pointnet2 import group_neighbourhoods

TEACHERS = {
    "pointnet2_ssg": PointNet2Config(num_classes=4, centres=(16, 4), radii=(0.6, 1.2), neighbours=(6, 3),
                                     level_widths=((8, 16), (16, 24)), global_widths=(24, 32), head_widths=(16,)),
    "dgcnn": DGCNNConfig(num_classes=4, k=5, edge_widths=(8, 16), embed_width=32, head_widths=(16,)),
}


def _clouds(batch=12, n=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(batch) % 4
    points = torch.randn(batch, n, 3, generator=generator) * (0.3 + 0.25 * labels[:, None, None])
    return points, labels


def _student(backbone, quantizer, aggregation, points):
    torch.manual_seed(1)
    model = create_model(student_spec(model_spec(backbone, TEACHERS[backbone]), quantizer, aggregation,
                                      backbone=backbone))
    initialize_binary_scales(model, points)
    return model


@pytest.mark.parametrize("aggregation", ["max", "ema"])
@pytest.mark.parametrize("quantizer", sorted(QUANTIZERS))
@pytest.mark.parametrize("backbone", sorted(TEACHERS))
def test_every_binary_backbone_trains_with_decreasing_loss(backbone, quantizer, aggregation):
    points, labels = _clouds()
    model = _student(backbone, quantizer, aggregation, points)
    assert model.spec["name"] == f"binary_{backbone}"
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(20):
        set_training_progress(model, step, 20)
        loss = torch.nn.functional.cross_entropy(model(points).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3]), losses


def test_the_students_keep_the_teachers_layout_with_float_first_and_last_layers():
    points, _ = _clouds()
    pointnet2 = _student("pointnet2_ssg", "lsr", "ema", points)
    assert pointnet2.config.centres == (16, 4) and pointnet2.config.level_widths == ((8, 16), (16, 24))
    assert isinstance(pointnet2.levels[0].mlp[0], torch.nn.Conv1d)  # on coordinates
    assert isinstance(pointnet2.levels[1].mlp[0], BinaryLinear) and isinstance(pointnet2.global_mlp[0], BinaryLinear)
    dgcnn = _student("dgcnn", "lsr", "ema", points)
    assert isinstance(dgcnn.edge_convs[0].mlp[0], torch.nn.Conv1d)
    assert isinstance(dgcnn.edge_convs[1].mlp[0], BinaryLinear) and isinstance(dgcnn.embed[0], BinaryLinear)
    for model in (pointnet2, dgcnn):
        assert isinstance(model.head[0], BinaryLinear) and type(model.head[-1]) is torch.nn.Linear
    with pytest.raises(ValueError, match="point_widths set the pointnet student's layers"):
        student_spec(model_spec("dgcnn", TEACHERS["dgcnn"]), "lsr", "ema", point_widths=(8, 8), backbone="dgcnn")
    with pytest.raises(ValueError, match="shortcuts are the pointnet student's; the dgcnn student has none"):
        student_spec(model_spec("dgcnn", TEACHERS["dgcnn"]), "lsr", "ema", shortcuts=True, backbone="dgcnn")
    with pytest.raises(ValueError, match="head_shortcuts are the pointnet student's; the pointnet2_ssg student"):
        student_spec(model_spec("pointnet2_ssg", TEACHERS["pointnet2_ssg"]), "lsr", "ema", head_shortcuts=True,
                     backbone="pointnet2_ssg")


def test_ema_adds_the_offset_for_the_elements_each_aggregation_pools():
    points, _ = _clouds(batch=3)
    model = _student("pointnet2_ssg", "lsr", "ema", points).eval()
    level = model.levels[1]
    xyz, features = model.levels[0](points, None)
    with torch.no_grad():
        _, got = level(xyz, features)
        _, grouped = group_neighbourhoods(xyz, features, 4, 1.2, 3)
        out = per_point_layers(level.mlp, grouped.reshape(3, 12, -1)).view(3, 4, 3, -1)
        torch.testing.assert_close(got, out.amax(dim=2) + ema_offset(3))  # 3 neighbours per group
        pooled = model(points).pooled
        centres, last = level(xyz, features)
        expected = per_point_layers(model.global_mlp, torch.cat([centres, last], -1)).amax(dim=1) + ema_offset(4)
        torch.testing.assert_close(pooled, expected)  # over the 4 centres
    dgcnn = _student("dgcnn", "lsr", "ema", points).eval()
    with torch.no_grad():
        conv = dgcnn.edge_convs[0]
        edges = edge_features(points, 5)
        out = per_point_layers(conv.mlp, edges.reshape(3, 200, -1)).view(3, 40, 5, -1)
        torch.testing.assert_close(conv(points), out.amax(dim=2) + ema_offset(5))  # over the k = 5 neighbours


@pytest.mark.parametrize("backbone", sorted(TEACHERS))
def test_export_refuses_them_with_the_reason(backbone):
    points, _ = _clouds()
    model = _student(backbone, "lsr", "ema", points)
    checkpoint = Checkpoint(model.spec, model.state_dict(), ["a", "b", "c", "d"], {"num_points": 40}, {})
    with pytest.raises(ExportError, match=f"binary_{backbone} does not export: the engine runs PointNet's"):
        export_student(checkpoint)


def test_a_dgcnn_store_trains_a_binary_dgcnn_with_the_teachers_layout(dgcnn_store, shapes_dir, tmp_path):
    job = StudentJob(store=dgcnn_store, dataset=shapes_dir, out=str(tmp_path / "run"), backbone="dgcnn",
                     quantizer="lsr", aggregation="ema", loss=LossConfig(kd_weight=0.5, reg_weight=0.01),
                     train=StudentTrainConfig(epochs=2, batch_size=16, device="cpu"))
    summary = run_student_job(job, progress=False)
    assert summary["student"]["name"] == "binary_dgcnn" and summary["student"]["edge_widths"] == [8, 8, 16]
    assert summary["pooled_adapter"] is None  # the same pooled width as its teacher: 2 x 24
    assert summary["student_bytes"]["packed_bytes"] is None
    assert "does not export" in summary["student_bytes"]["not_packed"]
    assert 0 <= summary["final_test_overall_accuracy"] <= 1
    assert load_checkpoint(summary["outputs"]["checkpoint"]).spec["name"] == "binary_dgcnn"


def test_the_ablation_grid_of_another_backbone_trains_its_binary_students():
    from pointdistill.ablation import AblationConfig, ablation_runs

    runs = ablation_runs(AblationConfig(store="s", dataset="d", out="o", backbone="dgcnn", quantizers=("xnor", "lsr")))
    assert runs and {run.job.backbone for run in runs} == {"dgcnn"}
    assert {run.row for run in runs if run.table == "grid"} == {"XNOR+MAX", "XNOR+EMA", "LSR+MAX", "LSR+EMA"}


def test_table_6_layout_runs_only_the_named_methods_of_the_grid():
    """methods + grid_only: the seed paper's Table 6 rows (XNOR+MAX, LSR+EMA), each loss column once,
    and no regulariser comparison or NWSD; an unknown method is refused by name."""
    from pointdistill.ablation import AblationConfig, ablation_runs

    config = AblationConfig(store="s", dataset="d", out="o", backbone="pointnet2_ssg", methods=("xnor+max", "lsr+ema"),
                            grid_only=True)
    runs = ablation_runs(config)
    assert [(run.row, run.column) for run in runs] == [
        (row, column) for row in ("XNOR+MAX", "LSR+EMA") for column in ("original", "+KD", "+reg", "+KD+reg")]
    assert [(run.job.quantizer, run.job.aggregation) for run in runs[:1] + runs[4:5]] == [("xnor", "max"), ("lsr", "ema")]
    with_tables = ablation_runs(AblationConfig(store="s", dataset="d", out="o", methods=("xnor+max", "lsr+ema")))
    assert {run.table for run in with_tables} == {"grid", "regularizer", "nwsd"}
    with pytest.raises(ValueError, match="lsr\\+mean"):
        AblationConfig(store="s", dataset="d", out="o", methods=("lsr+mean",))


@pytest.mark.parametrize("config_cls, field, value", [
    (BinaryDGCNNConfig, "k", 0),
    (BinaryDGCNNConfig, "dropout", 1.0),
    (BinaryPointNet2Config, "centres", (128, 512)),
])
def test_a_binary_students_config_refuses_a_bad_field_under_its_own_name(config_cls, field, value):
    with pytest.raises(ValueError, match=f"^{config_cls.__name__}[.:]"):
        config_cls(num_classes=4, **{field: value})


def test_shortcuts_need_each_hidden_point_width_a_multiple_of_the_one_before():
    """The shortcut repeats its input along channels; the pooled layer (128 -> 1000) has none."""
    assert BinaryPointNetConfig(num_classes=4, point_widths=(64, 64, 128, 1000), shortcuts=True).shortcuts
    with pytest.raises(ValueError, match=r"^BinaryPointNetConfig.shortcuts needs .* got point_widths \(64, 96, 1024\)"):
        BinaryPointNetConfig(num_classes=4, point_widths=(64, 96, 1024), shortcuts=True)


def test_head_shortcuts_need_head_widths_that_nest():
    """The head's shortcut repeats or averages channels: each head width a multiple or a divisor of
    the one before it, from the pooled width."""
    assert BinaryPointNetConfig(num_classes=4, head_widths=(512, 1024, 256), head_shortcuts=True).head_shortcuts
    with pytest.raises(ValueError, match=r"^BinaryPointNetConfig.head_shortcuts needs .* got head_widths \(512, 384\)"):
        BinaryPointNetConfig(num_classes=4, head_widths=(512, 384), head_shortcuts=True)
    with pytest.raises(ValueError, match=r"^BinaryPointNetConfig.head_shortcuts needs head layers"):
        BinaryPointNetConfig(num_classes=4, head_widths=(), head_shortcuts=True)


def test_match_channels_repeats_to_widen_and_averages_its_adjoint_groups_to_narrow():
    x = torch.randn(2, 5, 8)
    wide = match_channels(x, 24)
    torch.testing.assert_close(wide, torch.cat([x, x, x], dim=-1))  # channel m is x's m % 8
    narrow = match_channels(x, 2)
    torch.testing.assert_close(narrow[..., 1], x[..., 1::2].mean(-1))  # channels 1, 3, 5, 7
    y = torch.randn(2, 5, 24)  # <repeat(x), y> = 3 <x, fold(y)>: the narrowing is the repeat's adjoint / 3
    torch.testing.assert_close((wide * y).sum(), 3 * (x * match_channels(y, 8)).sum())
    assert match_channels(x, 8) is x


def test_head_shortcuts_carry_the_pooled_features_real_values_to_the_classifier():
    """With head shortcuts the float classifier reads the pooled feature's values, not only the
    signs the binary head layers see: scaling the pooled feature (signs kept) changes the logits."""
    torch.manual_seed(0)
    model = BinaryPointNet(BinaryPointNetConfig(num_classes=4, point_widths=(8, 16), head_widths=(8, 4),
                                                head_shortcuts=True)).eval()
    pooled = torch.randn(3, 16)
    with torch.no_grad():
        h1 = match_channels(pooled, 8) + model.head[2](model.head[1](model.head[0](pooled)))
        h2 = match_channels(h1, 4) + model.head[5](model.head[4](model.head[3](h1)))
        torch.testing.assert_close(model.classify(pooled), model.head[6](h2))
        assert not torch.allclose(model.classify(2 * pooled), model.classify(pooled))
        plain = BinaryPointNet(dataclasses.replace(model.config, head_shortcuts=False)).eval()
        plain.load_state_dict(model.state_dict())  # the same parameters: the shortcuts add none
        torch.testing.assert_close(plain.classify(2 * pooled), plain.classify(pooled))


THRESHOLDED = BinaryPointNetConfig(num_classes=4, point_widths=(8, 8, 16, 32), head_widths=(16, 8),
                                   quantizer="bireal", shortcuts=True, head_shortcuts=True, learned_thresholds=True)


def test_learned_thresholds_need_a_shortcut_to_carry_the_input():
    with pytest.raises(ValueError, match=r"^BinaryPointNetConfig.learned_thresholds .* set shortcuts or head_shortcuts"):
        BinaryPointNetConfig(num_classes=4, learned_thresholds=True)
    with pytest.raises(ValueError, match="learned_thresholds are the pointnet student's; the dgcnn student has none"):
        student_spec(model_spec("dgcnn", TEACHERS["dgcnn"]), "lsr", "ema", backbone="dgcnn", learned_thresholds=True)
    model = BinaryPointNet(dataclasses.replace(THRESHOLDED, shortcuts=False))
    assert len(model.point_thresholds) == 0 and [t.shape[0] for t in model.head_thresholds] == [32, 16]


def test_a_learned_threshold_moves_what_a_layer_reads_not_what_its_shortcut_carries():
    """Each binary layer with a shortcut reads sign(x - t) (one t per input channel, starting at 0:
    the student starts as the one without thresholds); x goes on to the next layer unchanged."""
    torch.manual_seed(0)
    model = BinaryPointNet(THRESHOLDED).eval()
    assert [t.shape[0] for t in model.point_thresholds] == [8, 8, 16] and [t.shape[0] for t in model.head_thresholds] == [32, 16]
    plain = BinaryPointNet(dataclasses.replace(THRESHOLDED, learned_thresholds=False)).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "thresholds" not in k})
    points, _ = _clouds()
    with torch.no_grad():
        torch.testing.assert_close(model(points).logits, plain(points).logits)
        pooled = torch.randn(3, 32)
        model.head_thresholds[0].fill_(0.5)  # the first head layer reads sign(pooled - 0.5)
        h1 = match_channels(pooled, 16) + model.head[2](model.head[1](model.head[0](pooled - 0.5)))
        h2 = match_channels(h1, 8) + model.head[5](model.head[4](model.head[3](h1)))
        torch.testing.assert_close(model.classify(pooled), model.head[6](h2))


def test_learned_thresholds_get_the_same_gradients_from_the_fused_cpu_layers_as_from_autograd():
    """The fused CPU layers read x - t as any other input."""
    points, labels = _clouds(n=64)
    grads = {}
    for name in ("reference", "fast"):
        torch.manual_seed(1)
        model = BinaryPointNet(THRESHOLDED).train()
        model.training_kernel = name
        with torch.no_grad():
            for t in [*model.point_thresholds, *model.head_thresholds]:
                t.uniform_(-0.3, 0.3)
        torch.nn.functional.cross_entropy(model(points).logits, labels).backward()
        grads[name] = [t.grad for t in [*model.point_thresholds, *model.head_thresholds]]
    assert all(g.abs().sum() > 0 for g in grads["fast"])
    for expected, got in zip(grads["reference"], grads["fast"]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_config_refuses_fewer_than_two_classes_by_its_own_name(name):
    config_cls = MODELS[name].config_cls
    with pytest.raises(ValueError, match=rf"^{config_cls.__name__}\.num_classes must be >= 2, got 1$"):
        config_cls(num_classes=1)
