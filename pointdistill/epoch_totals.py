"""A training epoch's loss sums and correct predictions, added up on the training device.

Reading a CUDA tensor on the host (``.item()``, ``float()``, ``bool()``) waits for every kernel
queued before it, so a loop that reads each step's loss and accuracy cannot queue the next step
while the GPU still runs this one. ``EpochTotals`` adds on the device and is read at the end of
the epoch; a non-finite loss is remembered with its step and the terms at that step, and reported
by ``raise_if_diverged`` before anything of the epoch is saved. On the CPU (``check_every_step``)
the check runs after every step, where reading costs nothing and a diverged run stops at once.
"""

from __future__ import annotations

import torch


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good resume state is kept."""


class EpochTotals:
    """Sums over one epoch's steps of ``count * value`` for the total loss and each named term
    (float64, on ``device``), the number of correct argmax predictions and of samples, and the
    first step (1-based) whose total loss was not finite."""

    def __init__(self, device: torch.device, term_names: tuple[str, ...] = (), check_every_step: bool = False):
        self.names = (*term_names, "total")
        self.check_every_step = check_every_step
        self.sums = torch.zeros(len(self.names), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.first_bad_step = torch.zeros((), dtype=torch.int64, device=device)  # 0: none yet
        self.bad_values = torch.zeros(len(self.names), dtype=torch.float64, device=device)
        self.samples = 0

    def add(self, step: int, total: torch.Tensor, terms: dict[str, torch.Tensor], logits: torch.Tensor,
            labels: torch.Tensor) -> None:
        """Add step ``step`` (1-based): ``total`` the scalar loss, ``terms`` the unweighted terms
        named as at construction (scalars), ``logits`` [B, C] and ``labels`` int64 [B]."""
        values = torch.stack([*(terms[name].detach() for name in self.names[:-1]), total.detach()]).double()
        count = len(labels)
        self.sums += values * count
        self.correct += (logits.detach().argmax(1) == labels).sum()
        self.samples += count
        first_bad = torch.logical_not(torch.isfinite(values[-1])) & (self.first_bad_step == 0)
        self.first_bad_step = torch.where(first_bad, step, self.first_bad_step)
        self.bad_values = torch.where(first_bad, values, self.bad_values)

    def raise_if_diverged(self, epoch: int, epochs: int, steps: int, state_path=None) -> None:
        """TrainingDiverged naming epoch and the first non-finite step (1-based), the terms there
        and the resume state kept (after the previous epoch), when any step's loss was not finite."""
        step = int(self.first_bad_step)
        if step == 0:
            return
        *terms, total = self.bad_values.tolist()
        kept = (f"; the resume state after epoch {epoch - 1} is kept at {state_path}" if state_path and epoch > 1
                else "")
        detail = ", ".join(f"{name} {value:.4g}" for name, value in zip(self.names[:-1], terms))
        raise TrainingDiverged(f"epoch {epoch}/{epochs}, step {step}/{steps}: the loss is {total}"
                               f"{' (' + detail + ')' if detail else ''}; training stopped{kept}. Lower the "
                               f"learning rate or the loss weights")

    def after_step(self, epoch: int, epochs: int, steps: int, state_path=None) -> None:
        """The per-step check where reading is free (``check_every_step``); nothing otherwise."""
        if self.check_every_step:
            self.raise_if_diverged(epoch, epochs, steps, state_path)

    def means(self) -> dict[str, float]:
        """The epoch's per-sample means by name (the terms and "total") and "accuracy" (a
        fraction); one read of the device."""
        sums = (self.sums / max(self.samples, 1)).tolist()
        return {**dict(zip(self.names, sums)), "accuracy": int(self.correct) / max(self.samples, 1)}
