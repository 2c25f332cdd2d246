"""What `train-teacher` sets for any registered teacher, and the spec it builds from it.

A teacher's config class turns these options into itself (``from_teacher_options``), taking the
ones it has (None: its own default) and refusing the rest by name: no option means one thing for
one backbone and is silently ignored by another.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from pointdistill.models.registry import MODELS, config_from_fields, model_spec


@dataclass(frozen=True)
class TeacherOptions:
    """point_widths: the per-point layer widths, the last being the embedding that is pooled
    (PointNet: its shared MLP; DGCNN: its EdgeConv widths, then the embedding); head_widths: the
    classifier's hidden widths; neighbours: points per neighbourhood (DGCNN's k); centres: the
    points each local level samples (PointNet++'s set abstractions); the T-Nets are PointNet's.
    None: the model's default. model_fields: any of the model config's own fields by name (e.g.
    PointNet++'s level_widths), over its defaults; a field also set by an option above is refused."""

    point_widths: tuple[int, ...] | None = None
    head_widths: tuple[int, ...] | None = None
    neighbours: int | None = None
    centres: tuple[int, ...] | None = None
    input_transform: bool = False
    feature_transform: bool = False
    model_fields: dict | None = None

    def refuse(self, model: str, *names: str) -> None:
        """ValueError naming every option in ``names`` that is set, which ``model`` does not take."""
        given = [name for name in names if getattr(self, name) not in (None, False)]
        if given:
            raise ValueError(f"teacher {model!r} takes no {', '.join(given)}")


def teacher_spec(model: str, num_classes: int, options: TeacherOptions) -> dict:
    """The spec of teacher ``model`` (a registered model whose config has ``from_teacher_options``;
    a binary student's config sets it to None)."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; registered: {sorted(MODELS)}")
    config_cls = MODELS[model].config_cls
    if getattr(config_cls, "from_teacher_options", None) is None:
        raise ValueError(f"model {model!r} is not a teacher (a float network train-teacher trains)")
    config = config_cls.from_teacher_options(num_classes, options)
    fields = dict(options.model_fields or {})
    if fields:
        if "num_classes" in fields:
            raise ValueError(f"teacher {model!r}: num_classes comes from the dataset, not from the model config")
        plain = config_cls.from_teacher_options(num_classes, TeacherOptions())
        clash = sorted(name for name in fields if name in {f.name for f in dataclasses.fields(config_cls)}
                       and getattr(config, name) != getattr(plain, name))
        if clash:
            raise ValueError(f"teacher {model!r}: {', '.join(clash)} set both by an option and by the model config")
        config = config_from_fields(config_cls, {**dataclasses.asdict(config), **fields})
    return model_spec(model, config)


def read_model_fields(path: str) -> dict:
    """A model config file: a JSON or YAML mapping of config field names to values."""
    with open(path) as f:
        fields = yaml.safe_load(f)
    if not isinstance(fields, dict) or not all(isinstance(name, str) for name in fields):
        raise ValueError(f"{Path(path).name}: a model config is a mapping of field names to values, "
                         f"got {type(fields).__name__}")
    return fields
