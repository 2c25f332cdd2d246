import pytest
import torch

from pointdistill.models import CheckpointError, create_model, load_checkpoint


def test_pointnet_returns_logits_and_pooled_feature_after_max_pool():
    model = create_model({"name": "pointnet", "num_classes": 5, "point_widths": [8, 8, 16], "head_widths": [8],
                          "input_transform": True, "feature_transform": True}).eval()
    points = torch.randn(3, 40, 3)
    out = model(points)
    assert out.logits.shape == (3, 5) and out.pooled.shape == (3, 16)
    # The pooled feature is a max over points: invariant to point order.
    assert torch.allclose(model(points[:, torch.randperm(40)]).pooled, out.pooled, atol=1e-5)
    # The head maps exactly the pooled feature to the logits.
    assert torch.allclose(model.head(out.pooled), out.logits, atol=1e-6)


def test_unknown_model_or_field_is_refused():
    with pytest.raises(ValueError, match="unknown model 'pointnet9'"):
        create_model({"name": "pointnet9", "num_classes": 3})
    with pytest.raises(ValueError, match=r"unknown fields \['depth'\]"):
        create_model({"name": "pointnet", "num_classes": 3, "depth": 4})


def test_checkpoint_round_trip_rebuilds_the_same_model(teacher_path, shapes_dir):
    checkpoint = load_checkpoint(teacher_path)
    assert checkpoint.spec["name"] == "pointnet" and checkpoint.spec["input_transform"] is True
    assert checkpoint.dataset["num_points"] == 128 and len(checkpoint.dataset["fingerprint"]) == 64
    assert 0.0 <= checkpoint.metrics["test_overall_accuracy"] <= 1.0
    assert len(checkpoint.metrics["history"]) == 2
    raw = torch.load(teacher_path, weights_only=True)  # plain containers and tensors only
    assert set(raw["state_dict"]) == set(checkpoint.build_model().state_dict())
    points = torch.randn(2, 128, 3)
    a, b = checkpoint.build_model()(points), load_checkpoint(teacher_path).build_model()(points)
    assert torch.equal(a.logits, b.logits)
    assert checkpoint.weights_sha256() == load_checkpoint(teacher_path).weights_sha256()


class _Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_checkpoint_never_unpickles_code_and_names_bad_files(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "pointdistill.checkpoint", "x": _Payload()}, evil)
    with pytest.raises(CheckpointError, match=r"evil\.pt: unreadable checkpoint"):
        load_checkpoint(str(evil))
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match=r"other\.pt: not a pointdistill checkpoint"):
        load_checkpoint(str(other))
    with pytest.raises(CheckpointError, match=r"missing\.pt: checkpoint file not found"):
        load_checkpoint(str(tmp_path / "missing.pt"))


def test_a_spec_edited_to_enormous_widths_is_refused_before_allocating(teacher_path, tmp_path):
    from pointdistill.models import CheckpointError, load_checkpoint, save_checkpoint

    checkpoint = load_checkpoint(teacher_path)
    checkpoint.spec = {**checkpoint.spec, "head_widths": [300000, 300000]}  # 360 GB if built
    save_checkpoint(tmp_path / "edited.pt", checkpoint)
    with pytest.raises(CheckpointError, match=r"spec and weights disagree: head\.0\.weight: spec \[300000, 64\]"):
        load_checkpoint(tmp_path / "edited.pt").build_model()
