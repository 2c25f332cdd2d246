"""The names each registry accepts, importable without torch: commands check their input
against them before loading anything heavy (a wrong name fails in milliseconds, not after the
model libraries have loaded).

A registry refuses to register a name that is not declared here, and the tests check that every
name declared here is registered, so the two never drift apart. To add a quantizer: declare its
name here, then write the class with ``@register_quantizer(name)``.
"""

from __future__ import annotations

QUANTIZER_NAMES = ("bnn", "xnor", "irnet", "lsr", "bireal")
AGGREGATION_NAMES = ("max", "ema")
POOLING_NORM_NAMES = ("frobenius", "matrix-1", "matrix-2", "entrywise-l1", "nuclear", "matrix-inf")
TRAINING_KERNEL_NAMES = ("fast", "reference")  # a model's `training_kernel`
TEACHER_NAMES = ("pointnet", "dgcnn", "pointnet2_ssg")  # the models train-teacher builds (their configs: from_teacher_options)
STUDENT_BACKBONE_NAMES = ("pointnet", "dgcnn", "pointnet2_ssg")  # train-student --backbone: binary_<name>
# an ablation grid row: a quantizer with an aggregation, written "xnor+max"
METHOD_NAMES = tuple(f"{q}+{a}" for q in QUANTIZER_NAMES for a in AGGREGATION_NAMES)


def check_declared(kind: str, name: str, declared: tuple[str, ...]) -> None:
    """ValueError unless ``name`` is one of the ``declared`` names of registry ``kind``."""
    if name not in declared:
        raise ValueError(f"{kind} {name!r} is not declared in pointdistill/choices.py "
                         f"(declared: {', '.join(declared)}); declare it there first")
