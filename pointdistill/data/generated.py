"""A generated dataset of labelled parametric solids: the embedded default for demo and tests.

Every class is a surface of revolution (a 2-D profile swept around z with a number of
segments: many segments give round solids, 3 or 4 give prisms, pyramids, octahedra) or a
union of boxes. Each shape gets random proportions and a random rotation about z, its surface
is sampled uniformly by area, and it is unit-sphere normalised. Deterministic by seed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from pointdistill.data.modelnet import write_npz_split

Profile = tuple[np.ndarray, np.ndarray]  # radius [K], height [K] along the profile polyline
ROUND = 48


def _revolve(profile: Profile, segments: int) -> np.ndarray:
    """Triangles float64 [T, 3, 3] of the surface swept by ``profile`` around the z axis."""
    radius, height = profile
    angles = np.linspace(0.0, 2 * np.pi, segments + 1)
    ring = np.stack(
        [radius[:, None] * np.cos(angles)[None], radius[:, None] * np.sin(angles)[None],
         np.broadcast_to(height[:, None], (len(radius), segments + 1))], axis=-1)  # [K, S+1, 3]
    a, b = ring[:-1, :-1], ring[:-1, 1:]
    c, d = ring[1:, :-1], ring[1:, 1:]
    quads = np.concatenate([np.stack([a, b, d], -2), np.stack([a, d, c], -2)], 0)
    return quads.reshape(-1, 3, 3)


def _arc(center_z: float, radius: float, start: float, stop: float, steps: int = 12) -> Profile:
    t = np.linspace(start, stop, steps)
    return radius * np.cos(t), center_z + radius * np.sin(t)


def _polyline(*points: tuple[float, float]) -> Profile:
    r, z = zip(*points)
    return np.asarray(r, float), np.asarray(z, float)


def _join(*profiles: Profile) -> Profile:
    return np.concatenate([p[0] for p in profiles]), np.concatenate([p[1] for p in profiles])


def _box(sx: float, sy: float, sz: float, center=(0.0, 0.0, 0.0)) -> np.ndarray:
    cube = _revolve(_polyline((0, -1), (np.sqrt(2), -1), (np.sqrt(2), 1), (0, 1)), 4)
    rot = np.pi / 4
    cos, sin = np.cos(rot), np.sin(rot)
    cube = cube @ np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]]).T
    return cube * np.array([sx, sy, sz]) + np.asarray(center)


def _sphere(rng):
    return _revolve(_arc(0, 1, -np.pi / 2, np.pi / 2, 24), ROUND)


def _cylinder(rng):
    r, h = rng.uniform(0.4, 1.0), rng.uniform(0.6, 1.5)
    return _revolve(_polyline((0, -h), (r, -h), (r, h), (0, h)), ROUND)


def _cone(rng):
    r, h = rng.uniform(0.5, 1.0), rng.uniform(0.6, 1.5)
    return _revolve(_polyline((0, -h), (r, -h), (0, h)), ROUND)


def _torus(rng):
    minor = rng.uniform(0.15, 0.4)
    t = np.linspace(0, 2 * np.pi, 24)
    return _revolve((1.0 + minor * np.cos(t), minor * np.sin(t)), ROUND)


def _hemisphere(rng):
    return _revolve(_join(_polyline((0, 0)), _arc(0, 1, 0, np.pi / 2, 16)), ROUND)


def _bicone(rng):
    h = rng.uniform(0.6, 1.5)
    return _revolve(_polyline((0, -h), (1, 0), (0, h)), ROUND)


def _capsule(rng):
    r, h = rng.uniform(0.3, 0.6), rng.uniform(0.5, 1.2)
    return _revolve(_join(_arc(-h, r, -np.pi / 2, 0), _arc(h, r, 0, np.pi / 2)), ROUND)


def _box_class(rng):
    return _box(*rng.uniform(0.5, 1.0, size=3))


def _prism(rng):
    h = rng.uniform(0.5, 1.2)
    return _revolve(_polyline((0, -h), (1, -h), (1, h), (0, h)), 3)


def _pyramid(rng):
    h = rng.uniform(0.6, 1.4)
    return _revolve(_polyline((0, -h), (1, -h), (0, h)), 4)


def _octahedron(rng):
    h = rng.uniform(0.7, 1.4)
    return _revolve(_polyline((0, -h), (1, 0), (0, h)), 4)


def _cross(rng):
    arm, thick = rng.uniform(0.8, 1.2), rng.uniform(0.15, 0.3)
    return np.concatenate([_box(arm, thick, thick), _box(thick, arm, thick), _box(thick, thick, arm)])


SHAPE_CLASSES: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "box": _box_class,
    "bicone": _bicone,
    "capsule": _capsule,
    "cone": _cone,
    "cross": _cross,
    "cylinder": _cylinder,
    "hemisphere": _hemisphere,
    "octahedron": _octahedron,
    "prism": _prism,
    "pyramid": _pyramid,
    "sphere": _sphere,
    "torus": _torus,
}


def sample_surface(triangles: np.ndarray, num_points: int, rng: np.random.Generator) -> np.ndarray:
    """Points float64 [num_points, 3] uniform by area on ``triangles`` float64 [T, 3, 3]."""
    edge1 = triangles[:, 1] - triangles[:, 0]
    edge2 = triangles[:, 2] - triangles[:, 0]
    area = 0.5 * np.linalg.norm(np.cross(edge1, edge2), axis=1)
    picked = rng.choice(len(triangles), size=num_points, p=area / area.sum())
    u, v = rng.random(num_points), rng.random(num_points)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    return triangles[picked, 0] + u[:, None] * edge1[picked] + v[:, None] * edge2[picked]


def unit_sphere_normalise(points: np.ndarray) -> np.ndarray:
    """Centre [P, 3] points on their centroid and scale the farthest to distance 1."""
    centred = points - points.mean(axis=0)
    return centred / np.linalg.norm(centred, axis=1).max()


def generate_shape(class_name: str, num_points: int, rng: np.random.Generator) -> np.ndarray:
    """One shape of ``class_name``: float32 [num_points, 3], random proportions and z rotation."""
    triangles = SHAPE_CLASSES[class_name](rng)
    angle = rng.uniform(0, 2 * np.pi)
    cos, sin = np.cos(angle), np.sin(angle)
    points = sample_surface(triangles, num_points, rng) @ np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]]).T
    return unit_sphere_normalise(points).astype(np.float32)


def generate_split(per_class: int, num_points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """points float32 [C * per_class, num_points, 3] and labels int64, classes in SHAPE_CLASSES order."""
    rng = np.random.default_rng(seed)
    names = list(SHAPE_CLASSES)
    labels = np.repeat(np.arange(len(names)), per_class)
    points = np.stack([generate_shape(names[label], num_points, rng) for label in labels])
    return points, labels.astype(np.int64)


def write_generated_dataset(
    root: str | Path, train_per_class: int = 40, test_per_class: int = 10,
    num_points: int = 1024, seed: int = 0,
) -> Path:
    """Write the generated dataset in the npz layout (train.npz, test.npz, classes.txt) under ``root``."""
    root = Path(root)
    splits = {"train": (train_per_class, seed), "test": (test_per_class, seed + 1)}
    for split, (per_class, split_seed) in splits.items():
        points, labels = generate_split(per_class, num_points, split_seed)
        write_npz_split(root, split, points, labels, list(SHAPE_CLASSES))
    return root
