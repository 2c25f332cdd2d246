"""Shape-level augmentation: anisotropic scale and translation, from stored parameters.

A record stores the parameter vector ``[sx, sy, sz, tx, ty, tz]`` (float32), and
``apply(points, params)`` rebuilds exactly the cloud the teacher saw. Parameters for
(seed, shape index, augmentation index) come from a counter-based generator (SplitMix64
over a fixed counter layout), so any record can be regenerated on its own, however the work
was split. The generator is specified in store/README.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from pointdistill.config_checks import check_non_negative, check_positive

PARAM_NAMES = ("scale_x", "scale_y", "scale_z", "translate_x", "translate_y", "translate_z")
NUM_PARAMS = len(PARAM_NAMES)
GENERATOR = "splitmix64-v1"

_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MAX_AUGMENTATIONS = 1 << 24
_MAX_SHAPES = 1 << 32


@dataclass(frozen=True)
class AugmentPolicy:
    """Ranges of the per-axis uniform draws: scale in [scale_low, scale_high] (a factor),
    translation in [-translate, translate] (in unit-sphere units)."""

    scale_low: float = 2.0 / 3.0
    scale_high: float = 1.5
    translate: float = 0.2

    def __post_init__(self):
        check_positive("AugmentPolicy", scale_low=self.scale_low, scale_high=self.scale_high)
        check_non_negative("AugmentPolicy", translate=self.translate)
        if self.scale_low > self.scale_high:
            raise ValueError(f"AugmentPolicy: need scale_low <= scale_high, got {self.scale_low}, {self.scale_high}")

    def to_dict(self) -> dict:
        return {"kind": "scale-translate", "generator": GENERATOR, "param_names": list(PARAM_NAMES), **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "AugmentPolicy":
        if data.get("kind") != "scale-translate" or data.get("generator") != GENERATOR:
            raise ValueError(f"unknown augmentation policy {data.get('kind')!r} / generator {data.get('generator')!r}")
        return cls(scale_low=data["scale_low"], scale_high=data["scale_high"], translate=data["translate"])


def _splitmix64(state: np.ndarray) -> np.ndarray:
    """The SplitMix64 output function on uint64 arrays (wrapping arithmetic)."""
    z = state
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform_draws(seed: int, shape_index: np.ndarray, augmentation_index: np.ndarray) -> np.ndarray:
    """float64 [K, 6] in [0, 1): draw j of (shape i, augmentation a) is
    ``splitmix64(key + (counter + 1) * GOLDEN) >> 11`` / 2**53 with
    ``key = splitmix64(seed)`` and ``counter = i * 2**32 + a * 2**8 + j``."""
    shape_index = np.asarray(shape_index, dtype=np.uint64).reshape(-1, 1)
    augmentation_index = np.asarray(augmentation_index, dtype=np.uint64).reshape(-1, 1)
    if shape_index.size and int(shape_index.max()) >= _MAX_SHAPES:
        raise ValueError(f"shape index must be < 2**32, got {int(shape_index.max())}")
    if augmentation_index.size and int(augmentation_index.max()) >= _MAX_AUGMENTATIONS:
        raise ValueError(f"augmentation index must be < 2**24, got {int(augmentation_index.max())}")
    with np.errstate(over="ignore"):
        key = _splitmix64(np.array([seed], dtype=np.uint64))
        counter = (shape_index << np.uint64(32)) + (augmentation_index << np.uint64(8)) \
            + np.arange(NUM_PARAMS, dtype=np.uint64)[None, :]
        bits = _splitmix64(key + (counter + np.uint64(1)) * _GOLDEN_GAMMA)
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def augmentation_params(policy: AugmentPolicy, seed: int, shape_index, augmentation_index) -> np.ndarray:
    """float32 [K, 6] parameters for the pairs (shape_index[k], augmentation_index[k])."""
    u = uniform_draws(seed, shape_index, augmentation_index)
    low = np.array([policy.scale_low] * 3 + [-policy.translate] * 3)
    high = np.array([policy.scale_high] * 3 + [policy.translate] * 3)
    return (low + (high - low) * u).astype(np.float32)


def params_for_shapes(policy: AugmentPolicy, seed: int, shape_start: int, shape_stop: int,
                      augmentations: int) -> np.ndarray:
    """float32 [shape_stop - shape_start, augmentations, 6]: every augmentation of a block of shapes."""
    shapes = np.repeat(np.arange(shape_start, shape_stop), augmentations)
    augs = np.tile(np.arange(augmentations), shape_stop - shape_start)
    params = augmentation_params(policy, seed, shapes, augs)
    return params.reshape(shape_stop - shape_start, augmentations, NUM_PARAMS)


def apply(points: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Augmented clouds: ``points * scale + translation``.

    points: float32 [B, N, 3]; params: float32 [B, 6] as ``[sx, sy, sz, tx, ty, tz]``.
    Returns float32 [B, N, 3].
    """
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"apply: points must be [B, N, 3], got {list(points.shape)}")
    if params.shape != (points.shape[0], NUM_PARAMS):
        raise ValueError(f"apply: params must be [{points.shape[0]}, {NUM_PARAMS}], got {list(params.shape)}")
    return points * params[:, None, :3] + params[:, None, 3:]
