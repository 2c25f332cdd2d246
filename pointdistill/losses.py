"""The distillation loss: a weighted sum of named terms, each logged by name.

    L = lambda * L_DS + (1 - lambda) * L_CE + eta * L_reg - w * L_self

L_DS: Hinton KD at temperature T (soft cross-entropy, times T^2); L_reg: a matrix norm of
(student pooled - teacher pooled), batch x channels; L_self: T^2 * KL(p_prev || p_now) against
the student's own softened predictions for the same record slot in an earlier epoch
(negative-weight self-distillation; our definition, see README). ../shared/REFERENCE.md §2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pointdistill.choices import POOLING_NORM_NAMES, check_declared
from pointdistill.config_checks import check_non_negative, check_positive

POOLING_NORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "frobenius": lambda h: torch.linalg.matrix_norm(h, ord="fro"),
    "matrix-1": lambda h: h.abs().sum(dim=0).max(),  # max over columns of the column abs sum
    "matrix-2": lambda h: torch.linalg.matrix_norm(h, ord=2),  # largest singular value
    "entrywise-l1": lambda h: h.abs().sum(),
    "nuclear": lambda h: torch.linalg.matrix_norm(h, ord="nuc"),
    "matrix-inf": lambda h: h.abs().sum(dim=1).max(),  # max over rows of the row abs sum
}
for _name in POOLING_NORMS:
    check_declared("pooling norm", _name, POOLING_NORM_NAMES)


def pooling_regularizer(student_pooled: torch.Tensor, teacher_pooled: torch.Tensor, norm: str) -> torch.Tensor:
    """g(H_q - H_f) for pooled features [B, D] (float32 result)."""
    if norm not in POOLING_NORMS:
        raise ValueError(f"unknown pooling regulariser {norm!r}; one of {sorted(POOLING_NORMS)}")
    if student_pooled.shape != teacher_pooled.shape:
        raise ValueError(f"student pooled {list(student_pooled.shape)} and teacher pooled "
                         f"{list(teacher_pooled.shape)} differ; the regulariser needs the same width D")
    return POOLING_NORMS[norm]((student_pooled - teacher_pooled).float())


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * mean_b CE(softmax(z_f / T), softmax(z_q / T)); logits [B, C]."""
    teacher_p = F.softmax(teacher_logits.float() / temperature, dim=1)
    student_logp = F.log_softmax(student_logits.float() / temperature, dim=1)
    return temperature**2 * -(teacher_p * student_logp).sum(dim=1).mean()


def self_divergence(student_logits: torch.Tensor, previous_p: torch.Tensor, seen: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """T^2 * mean over seen slots of KL(p_prev || softmax(z / T)); 0 when no slot was seen."""
    if not seen.any():
        return student_logits.new_zeros(())
    logp = F.log_softmax(student_logits[seen].float() / temperature, dim=1)
    prev = previous_p[seen].float()
    kl = (prev * (prev.clamp_min(1e-12).log() - logp)).sum(dim=1)
    return temperature**2 * kl.mean()


@dataclass(frozen=True)
class LossConfig:
    """kd_weight = lambda in [0, 1]; temperature = T; reg_weight = eta; regularizer = g;
    self_weight = w of negative-weight self-distillation (0 = off)."""

    kd_weight: float = 0.0
    temperature: float = 2.0
    reg_weight: float = 0.0
    regularizer: str = "matrix-1"
    self_weight: float = 0.0

    def __post_init__(self):
        check_non_negative("LossConfig", kd_weight=self.kd_weight, reg_weight=self.reg_weight,
                           self_weight=self.self_weight)
        check_positive("LossConfig", temperature=self.temperature)
        if self.kd_weight > 1:
            raise ValueError(f"LossConfig.kd_weight (lambda) must be in [0, 1], got {self.kd_weight}")
        if self.regularizer not in POOLING_NORMS:
            raise ValueError(f"LossConfig.regularizer {self.regularizer!r} unknown; one of {sorted(POOLING_NORMS)}")

    @property
    def needs_teacher(self) -> bool:
        return self.kd_weight > 0 or self.reg_weight > 0

    @property
    def term_names(self) -> tuple[str, ...]:
        """The active terms, in the order ``total_loss`` returns them."""
        active = {"ce": True, "kd": self.kd_weight > 0, "reg": self.reg_weight > 0, "self": self.self_weight > 0}
        return tuple(name for name, on in active.items() if on)


@dataclass
class LossTargets:
    """What one batch is scored against. labels int64 [B]; teacher_logits [B, C] and
    teacher_pooled [B, D] (float32); previous_p [B, C] and seen bool [B] for self-distillation."""

    labels: torch.Tensor
    teacher_logits: torch.Tensor | None = None
    teacher_pooled: torch.Tensor | None = None
    previous_p: torch.Tensor | None = None
    seen: torch.Tensor | None = None


def total_loss(config: LossConfig, logits: torch.Tensor, pooled: torch.Tensor,
               targets: LossTargets) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted total and every active term by name (``config.term_names``): unweighted,
    detached scalars on the loss's device, for logging without a host read."""
    terms = {"ce": F.cross_entropy(logits.float(), targets.labels)}
    weights = {"ce": 1.0 - config.kd_weight}
    if config.kd_weight > 0:
        terms["kd"] = distillation_loss(logits, targets.teacher_logits, config.temperature)
        weights["kd"] = config.kd_weight
    if config.reg_weight > 0:
        terms["reg"] = pooling_regularizer(pooled, targets.teacher_pooled, config.regularizer)
        weights["reg"] = config.reg_weight
    if config.self_weight > 0:
        terms["self"] = self_divergence(logits, targets.previous_p, targets.seen, config.temperature)
        weights["self"] = -config.self_weight
    total = sum(weights[name] * value for name, value in terms.items())
    return total, {name: value.detach() for name, value in terms.items()}
