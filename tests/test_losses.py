import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pointdistill.distill import StudentTrainConfig
from pointdistill.losses import LossConfig, LossTargets, pooling_regularizer, total_loss
from pointdistill.models import BinaryPointNetConfig, DGCNNConfig, PointNet2Config, PointNetConfig
from pointdistill.train import TrainConfig

H = np.array([[1.0, -2.0, 0.5], [-3.0, 0.25, 4.0]])
DEFINITIONS = {
    "frobenius": np.sqrt((H**2).sum()),
    "matrix-1": np.abs(H).sum(axis=0).max(),
    "matrix-2": np.linalg.svd(H, compute_uv=False).max(),
    "entrywise-l1": np.abs(H).sum(),
    "nuclear": np.linalg.svd(H, compute_uv=False).sum(),
    "matrix-inf": np.abs(H).sum(axis=1).max(),
}


@pytest.mark.parametrize("norm", sorted(DEFINITIONS))
def test_each_regulariser_matches_its_definition(norm):
    teacher = torch.randn(2, 3, dtype=torch.float64)
    student = teacher + torch.from_numpy(H)
    assert pooling_regularizer(student, teacher, norm).item() == pytest.approx(DEFINITIONS[norm], rel=1e-6)


def test_regulariser_needs_equal_widths():
    with pytest.raises(ValueError, match="same width D"):
        pooling_regularizer(torch.zeros(2, 3), torch.zeros(2, 4), "matrix-1")


def logits():
    torch.manual_seed(0)
    return torch.randn(5, 4), torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])


def test_kd_at_t1_lambda1_is_soft_cross_entropy():
    student, teacher, labels = logits()
    total, terms = total_loss(LossConfig(kd_weight=1.0, temperature=1.0), student, torch.zeros(5, 2),
                              LossTargets(labels, teacher, torch.zeros(5, 2)))
    soft_ce = -(F.softmax(teacher, 1) * F.log_softmax(student, 1)).sum(1).mean()
    assert total.item() == pytest.approx(soft_ce.item(), rel=1e-6)
    assert set(terms) == {"ce", "kd"}


def test_kd_is_scaled_by_t_squared_and_mixed_with_ce():
    student, teacher, labels = logits()
    config = LossConfig(kd_weight=0.3, temperature=2.0)
    total, terms = total_loss(config, student, torch.zeros(5, 2), LossTargets(labels, teacher, torch.zeros(5, 2)))
    kd = 4 * -(F.softmax(teacher / 2, 1) * F.log_softmax(student / 2, 1)).sum(1).mean()
    ce = F.cross_entropy(student, labels)
    assert terms["kd"] == pytest.approx(kd.item(), rel=1e-6)
    assert total.item() == pytest.approx(0.3 * kd.item() + 0.7 * ce.item(), rel=1e-6)


def test_total_adds_eta_times_regulariser_and_subtracts_w_times_self_kl():
    student, teacher, labels = logits()
    pooled_s, pooled_t = torch.randn(5, 3), torch.randn(5, 3)
    previous = F.softmax(torch.randn(5, 4), 1)
    seen = torch.tensor([True, False, True, True, False])
    config = LossConfig(kd_weight=0.0, reg_weight=0.1, regularizer="frobenius", self_weight=0.2, temperature=2.0)
    total, terms = total_loss(config, student, pooled_s, LossTargets(labels, teacher, pooled_t, previous, seen))
    kl = (previous[seen] * (previous[seen].log() - F.log_softmax(student[seen] / 2, 1))).sum(1).mean()
    expected = F.cross_entropy(student, labels) + 0.1 * torch.linalg.norm(pooled_s - pooled_t) - 0.2 * 4 * kl
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms["self"] == pytest.approx(4 * kl.item(), rel=1e-5)
    # No slot seen yet (the first epoch): the self term is zero.
    _, first = total_loss(config, student, pooled_s, LossTargets(labels, teacher, pooled_t, previous, seen & False))
    assert first["self"] == 0.0


def test_bad_loss_settings_are_named():
    with pytest.raises(ValueError, match="kd_weight"):
        LossConfig(kd_weight=1.5)
    with pytest.raises(ValueError, match="regularizer 'l3'"):
        LossConfig(regularizer="l3")


@pytest.mark.parametrize("field", ["kd_weight", "temperature", "reg_weight", "self_weight"])
def test_non_finite_loss_weights_are_refused_by_name(field):
    with pytest.raises(ValueError, match=f"LossConfig.{field} must be a finite number"):
        LossConfig(**{field: float("inf")})


@pytest.mark.parametrize("config", [StudentTrainConfig, TrainConfig])
def test_non_finite_learning_rates_are_refused_by_name(config):
    with pytest.raises(ValueError, match=r"\.lr must be a finite number, got inf"):
        config(lr=float("inf"))
    with pytest.raises(ValueError, match=r"\.lr must be a finite number, got nan"):
        config(lr=float("nan"))


@pytest.mark.parametrize("config", [StudentTrainConfig, TrainConfig])
@pytest.mark.parametrize("field", ["epochs", "batch_size", "eval_batch_size", "eval_every"])
def test_training_counts_below_one_are_refused_by_name(config, field):
    with pytest.raises(ValueError, match=rf"^{config.__name__}\.{field} must be >= 1, got 0$"):
        config(**{field: 0})
    with pytest.raises(ValueError, match=rf"^{config.__name__}\.{field} must be a finite number, got nan$"):
        config(**{field: float("nan")})  # NaN < 1 is False: a plain comparison let it through


@pytest.mark.parametrize("config", [StudentTrainConfig, TrainConfig])
def test_negative_weight_decay_is_refused_by_name(config):
    with pytest.raises(ValueError, match=rf"^{config.__name__}\.weight_decay must be >= 0, got -0.0001$"):
        config(weight_decay=-1e-4)


@pytest.mark.parametrize("field", ["kd_weight", "reg_weight", "self_weight"])
def test_negative_loss_weights_are_refused_by_name(field):
    with pytest.raises(ValueError, match=rf"^LossConfig\.{field} must be >= 0, got -0.1$"):
        LossConfig(**{field: -0.1})


@pytest.mark.parametrize("config", [PointNetConfig, PointNet2Config, DGCNNConfig, BinaryPointNetConfig])
@pytest.mark.parametrize("rate", [1.0, -0.1, float("nan")])
def test_dropout_outside_zero_to_one_is_refused_by_name(config, rate):
    with pytest.raises(ValueError, match=rf"^{config.__name__}\.dropout must be"):
        config(num_classes=40, dropout=rate)
    assert config(num_classes=40, dropout=0.0).dropout == 0.0
