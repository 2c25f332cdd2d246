"""Aggregation of per-point features into one global feature: max and EMA (BiPointNet)."""

from __future__ import annotations

import functools

import torch
from torch import nn

from pointdistill.choices import AGGREGATION_NAMES, check_declared

AGGREGATIONS: dict[str, type[nn.Module]] = {}


def register_aggregation(name: str):
    check_declared("aggregation", name, AGGREGATION_NAMES)

    def decorate(cls):
        AGGREGATIONS[name] = cls
        return cls

    return decorate


def create_aggregation(name: str) -> nn.Module:
    if name not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {name!r}; registered: {sorted(AGGREGATIONS)}")
    return AGGREGATIONS[name]()


@functools.lru_cache(maxsize=64)
def ema_offset(num_points: int) -> float:
    """delta_n = -Phi^-1(0.5^(1/n)): shifts the max of n standard-normal values so that its
    sign is +1 with probability 1/2 (maximum entropy). n = 1024 -> -3.2044."""
    if num_points < 1:
        raise ValueError(f"EMA needs at least one point, got {num_points}")
    quantile = torch.tensor(0.5 ** (1.0 / num_points), dtype=torch.float64)
    return -float(torch.special.ndtri(quantile))


class _Aggregation(nn.Module):
    """max over points plus an offset that depends only on the number of points N."""

    def offset(self, num_points: int) -> float:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, N, C] (point features, features last) -> [B, C]."""
        return x.amax(dim=1) + self.offset(x.shape[1])


@register_aggregation("max")
class MaxAggregation(_Aggregation):
    """Plain max pooling."""

    def offset(self, num_points: int) -> float:
        return 0.0


@register_aggregation("ema")
class EntropyMaximizingAggregation(_Aggregation):
    """max over batch-normalised points + delta_N for the actual N."""

    def offset(self, num_points: int) -> float:
        return ema_offset(num_points)
