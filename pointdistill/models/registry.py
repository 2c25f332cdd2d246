"""Model registry: every model is rebuilt from a spec ``{"name": ..., **config fields}``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn


class ModelOutput(NamedTuple):
    """logits: float32 [B, C]; pooled: float32 [B, D], the global feature after aggregation."""

    logits: torch.Tensor
    pooled: torch.Tensor


class _Entry(NamedTuple):
    config_cls: type
    factory: Callable[[Any], nn.Module]


MODELS: dict[str, _Entry] = {}


def register_model(name: str, config_cls: type):
    """Register ``factory(config) -> nn.Module`` under ``name`` with its config dataclass."""

    def decorate(factory):
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = _Entry(config_cls, factory)
        return factory

    return decorate


def _tuples(value: Any) -> Any:
    """Lists (JSON arrays), nested ones too, as tuples: the config dataclasses' form."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _lists(value: Any) -> Any:
    """Tuples, nested ones too, as lists: the JSON form of a spec."""
    return [_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


def config_from_fields(config_cls: type, fields: dict) -> Any:
    """``config_cls`` from a spec's fields (JSON lists as tuples); unknown fields are refused."""
    known = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = set(fields) - set(known)
    if unknown:
        raise ValueError(f"{config_cls.__name__}: unknown fields {sorted(unknown)}")
    return config_cls(**{k: _tuples(v) for k, v in fields.items()})


def model_spec(name: str, config: Any) -> dict:
    """The JSON-friendly spec that ``create_model`` rebuilds the model from."""
    return {"name": name, **{k: _lists(v) for k, v in dataclasses.asdict(config).items()}}


def create_model(spec: dict) -> nn.Module:
    """Build the model described by ``spec`` (as stored in checkpoints and record stores)."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {sorted(MODELS)}")
    entry = MODELS[name]
    model = entry.factory(config_from_fields(entry.config_cls, spec))
    model.spec = model_spec(name, model.config)
    return model
