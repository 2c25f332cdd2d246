"""Checks that refuse a config value before any work starts, naming it as ``Owner.field``.

Each takes the owner's name (the config class, or the function) and the checked values as
keywords, so one call checks several fields: ``check_fraction("PointNetConfig", dropout=0.3)``.
NaN and infinities are refused by every check.
"""

from __future__ import annotations

import math


def check_finite(owner: str, **values: float) -> None:
    """Refuse NaN and infinite values."""
    for name, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"{owner}.{name} must be a finite number, got {value}")


def check_positive(owner: str, **values: float) -> None:
    """Refuse values that are not finite and > 0."""
    check_finite(owner, **values)
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{owner}.{name} must be > 0, got {value}")


def check_non_negative(owner: str, **values: float) -> None:
    """Refuse values that are not finite and >= 0."""
    check_finite(owner, **values)
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{owner}.{name} must be >= 0, got {value}")


def check_at_least(owner: str, minimum: int, **values: float) -> None:
    """Refuse values that are not finite and >= minimum (a count: epochs, classes, neighbours)."""
    check_finite(owner, **values)
    for name, value in values.items():
        if value < minimum:
            raise ValueError(f"{owner}.{name} must be >= {minimum}, got {value}")


def check_fraction(owner: str, **values: float) -> None:
    """Refuse values outside [0, 1) (a dropout rate, a held-out share)."""
    check_finite(owner, **values)
    for name, value in values.items():
        if not 0 <= value < 1:
            raise ValueError(f"{owner}.{name} must be in [0, 1), got {value}")
