"""The types of the flows' parameters. A flow's signature is the one declaration of each of its
options — type, default, constraints and help text: Prefect turns it into the deployment's
parameter schema (the server rejects bad runs), and the `pointdistill` command reads its options
from it (flows/signature.py). Importable without torch or Prefect, so that the command checks
its input before loading either.

Usage in a flow: ``epochs: Annotated[Count, Help("training epochs")] = 20``.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field
from pydantic.fields import FieldInfo

from pointdistill.choices import (
    AGGREGATION_NAMES, METHOD_NAMES, POOLING_NORM_NAMES, QUANTIZER_NAMES, STUDENT_BACKBONE_NAMES, TEACHER_NAMES,
    TRAINING_KERNEL_NAMES,
)

Quantizer = Literal[QUANTIZER_NAMES]  # type: ignore[valid-type]
Aggregation = Literal[AGGREGATION_NAMES]  # type: ignore[valid-type]
Method = Literal[METHOD_NAMES]  # type: ignore[valid-type]
PoolingNorm = Literal[POOLING_NORM_NAMES]  # type: ignore[valid-type]
TrainingKernel = Literal[TRAINING_KERNEL_NAMES]  # type: ignore[valid-type]
Teacher = Literal[TEACHER_NAMES]  # type: ignore[valid-type]
StudentBackbone = Literal[STUDENT_BACKBONE_NAMES]  # type: ignore[valid-type]
Count = Annotated[int, Field(ge=1)]  # a number of things that must be at least one
NonNegativeInt = Annotated[int, Field(ge=0)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]  # a share or probability, below one


def Help(text: str) -> FieldInfo:  # noqa: N802 (reads as an annotation, like pydantic's Field)
    """A parameter's help text: the command's --help and the deployment's parameter description."""
    return Field(description=text)


def help_text(annotation) -> str:
    """The help of an annotated parameter type: its outermost ``Help`` ("" if none)."""
    texts = [m.description for m in getattr(annotation, "__metadata__", ()) if isinstance(m, FieldInfo)
             and m.description]
    return texts[-1] if texts else ""


def documented(fn):
    """Append an ``Args:`` section built from each parameter's Help to ``fn``'s docstring. Prefect
    takes parameter descriptions from docstrings (not from Annotated fields), so this is how the
    one declaration also reaches the deployment's parameter schema and the Prefect UI. Apply it
    under ``@flow``."""
    hints = typing.get_type_hints(fn, include_extras=True)
    lines = [f"    {name}: {help_text(hints.get(name))}" for name in inspect.signature(fn).parameters
             if help_text(hints.get(name))]
    fn.__doc__ = inspect.cleandoc(fn.__doc__ or "") + "\n\nArgs:\n" + "\n".join(lines) + "\n"
    return fn


@dataclass(frozen=True)
class MustExist:
    """Marks a path parameter that must exist when the run starts (local paths are checked by the
    command before anything loads; URLs by the run)."""


@dataclass(frozen=True)
class OneOf:
    """Marks parameters of which at most one may be given (``required``: exactly one), e.g. the
    ``resume`` / ``overwrite`` switches."""

    group: str
    required: bool = False


ExistingPath = Annotated[str, MustExist()]
Device = Annotated[str, Help("cpu, cuda, cuda:N or auto")]
Kernel = Annotated[TrainingKernel, Help(
    "fast: on the CPU, binary point layers with BatchNorm and Hardtanh, and the widest layer with BatchNorm "
    "and the max, fused over C kernels; reference: plain autograd, to re-check a result (CUDA always runs it)")]
Resume = Annotated[bool, OneOf("existing"), Help(
    "continue the interrupted run at out from its last finished epoch (bit-identical to an uninterrupted run "
    "on the CPU); a finished run is reported, not retrained")]
Overwrite = Annotated[bool, OneOf("existing"), Help("replace an existing run at out")]
Progress = Annotated[bool, Help("show progress bars")]
KdWeight = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False), Help("lambda: weight of KD against CE (0 = off)")]
Temperature = Annotated[Positive, Help("KD temperature T")]
RegWeight = Annotated[NonNegative, Help("eta: weight of the pooling regulariser (0 = off)")]
Regularizer = Annotated[PoolingNorm, Help("the norm g of the pooling regulariser")]
SelfWeight = Annotated[NonNegative, Help("w of negative-weight self-distillation (0 = off)")]
DaskAddress = Annotated[str | None, Help("scheduler address of an existing Dask cluster (default: a local one)")]
Workers = Annotated[NonNegativeInt, Help("worker processes of the local Dask cluster; 0 = run in this process")]
Catalog = Annotated[str | None, Help("catalog root (default: $POINTDISTILL_CATALOG, else store/catalog)")]


def existing_mode(resume: bool, overwrite: bool) -> str:
    """The library's ``existing`` from the flows' two switches (a finished or interrupted run at
    ``out`` is refused unless one of them is set)."""
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: resume continues the run at out, "
                         "overwrite replaces it")
    return "resume" if resume else "overwrite" if overwrite else "refuse"
