"""Readers for the two on-disk layouts: plain npz splits and the ModelNet40 HDF5 release.

npz layout (what ``pointdistill make-dataset`` writes and ../shared/data holds)::

    ROOT/train.npz, ROOT/test.npz   points float32 [N, P, 3], labels int [N]
    ROOT/classes.txt                one class name per line (or a ``classes`` array in each npz)

HDF5 layout (``modelnet40_ply_hdf5_2048``)::

    ROOT/ply_data_{split}{k}.h5     data float32 [n, 2048, 3], label uint8 [n, 1]
    ROOT/shape_names.txt            one class name per line
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pointdistill.data.pointcloud import DatasetError, PointCloudSet, checked_point_cloud_set
from pointdistill.storage import filesystem, open_file

SPLITS = ("train", "test")


def _join(root: str, name: str) -> str:
    return root.rstrip("/") + "/" + name


def _read_class_names(path: str) -> list[str]:
    try:
        with open_file(path, "rt") as f:
            names = [line.strip() for line in f if line.strip()]
    except OSError as error:
        raise DatasetError(f"{path}: cannot read class names ({error})") from error
    if not names:
        raise DatasetError(f"{path}: no class names in file")
    return names


def _exists(path: str) -> bool:
    fs, fs_path = filesystem(path)
    return fs.exists(fs_path)


def read_npz_split(root: str, split: str, num_points: int) -> PointCloudSet:
    path = _join(root, f"{split}.npz")
    try:
        with open_file(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
            missing = {"points", "labels"} - set(npz.files)
            if missing:
                raise DatasetError(f"{path}: missing arrays {sorted(missing)}; expected 'points' and 'labels'")
            points, labels = npz["points"], npz["labels"]
            classes = list(npz["classes"]) if "classes" in npz.files else None
    except DatasetError:
        raise
    except Exception as error:  # zip/npy corruption surfaces as many exception types
        raise DatasetError(f"{path}: unreadable npz file ({type(error).__name__}: {error})") from error
    if classes is None:
        classes = _read_class_names(_join(root, "classes.txt"))
    return checked_point_cloud_set(
        name=Path(root.rstrip("/")).name, split=split, points=points, labels=labels,
        class_names=classes, num_points=num_points, source=path,
    )


def _h5_part_number(path: str) -> int:
    match = re.search(r"(\d+)\.h5$", path)
    return int(match.group(1)) if match else 0


def read_hdf5_split(root: str, split: str, num_points: int) -> PointCloudSet:
    import h5py

    fs, fs_root = filesystem(root)
    parts = sorted(fs.glob(f"{fs_root.rstrip('/')}/ply_data_{split}*.h5"), key=_h5_part_number)
    if not parts:
        raise DatasetError(f"{root}: no ply_data_{split}*.h5 files")
    class_names = _read_class_names(_join(root, "shape_names.txt"))
    pieces = []
    for part in parts:
        try:
            with fs.open(part, "rb") as f, h5py.File(f, "r") as h5:
                points = np.asarray(h5["data"])
                labels = np.asarray(h5["label"]).reshape(-1)
        except Exception as error:
            raise DatasetError(f"{part}: unreadable HDF5 file ({type(error).__name__}: {error})") from error
        pieces.append(checked_point_cloud_set(
            name="", split=split, points=points, labels=labels, class_names=class_names,
            num_points=num_points, source=part,
        ))
    return PointCloudSet(
        name=Path(root.rstrip("/")).name, split=split,
        points=np.concatenate([p.points for p in pieces]),
        labels=np.concatenate([p.labels for p in pieces]),
        class_names=tuple(class_names), source=root,
    )


# Layout name -> (detector on the root, reader). Detection order is the dict order.
DATASET_LAYOUTS: dict[str, tuple[Callable[[str, str], bool], Callable[[str, str, int], PointCloudSet]]] = {
    "npz": (lambda root, split: _exists(_join(root, f"{split}.npz")), read_npz_split),
    "modelnet40-hdf5": (lambda root, split: _exists(_join(root, "shape_names.txt")), read_hdf5_split),
}


def load_dataset(root: str | os.PathLike, split: str, num_points: int) -> PointCloudSet:
    """Load ``split`` of the dataset at ``root`` (local path or fsspec URL), first ``num_points`` points."""
    root = str(root)
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {SPLITS}, got {split!r}")
    for detect, read in DATASET_LAYOUTS.values():
        if detect(root, split):
            return read(root, split, num_points)
    raise DatasetError(
        f"{root}: not a dataset directory; expected {split}.npz (+ classes.txt) "
        f"or ply_data_{split}*.h5 + shape_names.txt"
    )


def write_npz_split(root: str | Path, split: str, points: np.ndarray, labels: np.ndarray,
                    class_names: list[str]) -> Path:
    """Write one split in the npz layout; the file appears only when complete (atomic rename)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{split}.npz"
    with tempfile.NamedTemporaryFile(dir=root, suffix=".npz.partial", delete=False) as tmp:
        np.savez_compressed(tmp, points=points.astype(np.float32), labels=labels.astype(np.int64))
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, target)
    (root / "classes.txt").write_text("\n".join(class_names) + "\n")
    return target
