"""Typed flow parameters: names from the library's registries as Literal types, so a deployment's
parameter schema lists the allowed values and the Prefect server rejects any other."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from pointdistill.binary import AGGREGATIONS, QUANTIZERS
from pointdistill.binary.point_pool import TRAINING_KERNELS
from pointdistill.losses import POOLING_NORMS

Quantizer = Literal[tuple(QUANTIZERS)]  # type: ignore[valid-type]
Aggregation = Literal[tuple(AGGREGATIONS)]  # type: ignore[valid-type]
PoolingNorm = Literal[tuple(POOLING_NORMS)]  # type: ignore[valid-type]
TrainingKernel = Literal[TRAINING_KERNELS]  # type: ignore[valid-type]
Count = Annotated[int, Field(ge=1)]  # a number of things that must be at least one


def existing_mode(resume: bool, overwrite: bool) -> str:
    """The library's ``existing`` from the flows' two switches (a finished or interrupted run at
    ``out`` is refused unless one of them is set)."""
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: resume continues the run at out, "
                         "overwrite replaces it")
    return "resume" if resume else "overwrite" if overwrite else "refuse"
