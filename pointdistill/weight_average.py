"""Weight averaging over the last epochs (stochastic weight averaging, Izmailov et al. 2018, with
the schedule's own learning rate): the uniform mean of a model's state at the end of each
averaged epoch. For a binary student it averages the latent real weights, so the deployed signs
are those of the averaged weights (per weight, roughly the sign it held most over the window),
and the BatchNorm statistics with them."""

from __future__ import annotations

import torch


class WeightAverage:
    """The running uniform mean of ``model.state_dict()`` over the states passed to ``add``.

    Floating tensors (weights, BatchNorm running mean and variance) are averaged in float64 and
    returned in their own dtype; integer ones (BatchNorm's batch counters) are the latest state's.
    ``state_dict`` / ``load_state_dict`` carry the mean and its count across an interrupted run,
    so a resumed run ends with the same average as an uninterrupted one."""

    def __init__(self) -> None:
        self.count = 0
        self._mean: dict[str, torch.Tensor] = {}

    def add(self, model: torch.nn.Module) -> None:
        """Fold the model's current state into the mean."""
        self.count += 1
        for name, value in model.state_dict().items():
            value = value.detach().to("cpu", copy=True)
            if not value.is_floating_point():
                self._mean[name] = value
            elif self.count == 1:
                self._mean[name] = value.double()
            else:
                self._mean[name] += (value.double() - self._mean[name]) / self.count

    def averaged_state(self, like: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The mean as a state dict for ``like`` (its dtypes and device)."""
        if self.count == 0:
            raise ValueError("no state added to the weight average yet")
        return {name: self._mean[name].to(device=value.device, dtype=value.dtype)
                for name, value in like.state_dict().items()}

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": dict(self._mean)}

    def load_state_dict(self, state: dict) -> None:
        self.count, self._mean = int(state["count"]), dict(state["mean"])
