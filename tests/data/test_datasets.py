import numpy as np
import pytest

from pointdistill.data import DatasetError, load_dataset, write_generated_dataset, write_npz_split
from pointdistill.data.generated import SHAPE_CLASSES


def test_generated_dataset_is_deterministic_labelled_and_unit_sphere_normalised(tmp_path):
    a = write_generated_dataset(tmp_path / "a", train_per_class=3, test_per_class=1, num_points=64, seed=7)
    b = write_generated_dataset(tmp_path / "b", train_per_class=3, test_per_class=1, num_points=64, seed=7)
    c = write_generated_dataset(tmp_path / "c", train_per_class=3, test_per_class=1, num_points=64, seed=8)
    train_a, train_b, train_c = (load_dataset(root, "train", 64) for root in (a, b, c))
    assert len(SHAPE_CLASSES) >= 10
    assert train_a.class_names == tuple(SHAPE_CLASSES)
    assert np.array_equal(train_a.points, train_b.points)
    assert train_a.fingerprint() == train_b.fingerprint() != train_c.fingerprint()
    assert np.bincount(train_a.labels).tolist() == [3] * len(SHAPE_CLASSES)
    norms = np.linalg.norm(train_a.points, axis=2)
    assert np.allclose(norms.max(axis=1), 1.0, atol=1e-5)
    assert np.allclose(train_a.points.mean(axis=1), 0.0, atol=1e-5)
    assert len(load_dataset(a, "test", 64)) == len(SHAPE_CLASSES)


def test_first_num_points_are_used_and_fingerprinted(shapes_dir):
    full = load_dataset(shapes_dir, "train", 256)
    cut = load_dataset(shapes_dir, "train", 100)
    assert np.array_equal(cut.points, full.points[:, :100])
    assert cut.fingerprint() != full.fingerprint()


def test_fingerprint_covers_points_labels_and_class_names(tmp_path):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(4, 8, 3)).astype(np.float32)
    labels = np.array([0, 1, 0, 1])
    base = write_npz_split(tmp_path / "base", "train", points, labels, ["a", "b"])
    moved = points.copy()
    moved[2, 3, 1] += 1e-3
    variants = {
        "points": (moved, labels, ["a", "b"]),
        "labels": (points, np.array([0, 1, 1, 1]), ["a", "b"]),
        "classes": (points, labels, ["a", "c"]),
    }
    reference = load_dataset(base.parent, "train", 8).fingerprint()
    for name, (p, l, c) in variants.items():
        root = tmp_path / name
        write_npz_split(root, "train", p, l, c)
        assert load_dataset(root, "train", 8).fingerprint() != reference, name


def test_modelnet40_hdf5_layout_is_read_in_part_order(tmp_path):
    import h5py

    rng = np.random.default_rng(1)
    parts = [rng.normal(size=(n, 32, 3)).astype(np.float32) for n in (3, 2)]
    labels = [np.array([[0], [2], [1]], dtype=np.uint8), np.array([[1], [1]], dtype=np.uint8)]
    for k in (1, 0):  # written out of order on purpose
        with h5py.File(tmp_path / f"ply_data_train{k}.h5", "w") as h5:
            h5["data"], h5["label"] = parts[k], labels[k]
    (tmp_path / "shape_names.txt").write_text("airplane\nbathtub\nbed\n")
    data = load_dataset(tmp_path, "train", 16)
    assert data.class_names == ("airplane", "bathtub", "bed")
    assert np.array_equal(data.points, np.concatenate(parts)[:, :16])
    assert data.labels.tolist() == [0, 2, 1, 1, 1]


def _write_npz(root, **arrays):
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "train.npz", **arrays)
    (root / "classes.txt").write_text("a\nb\n")


def _good_arrays():
    return {"points": np.zeros((5, 16, 3), np.float32), "labels": np.array([0, 1, 0, 1, 0])}


@pytest.mark.parametrize("damage, message", [
    (lambda a: a["points"].__setitem__((3, 7, 1), np.nan), r"sample 3 has NaN or infinite"),
    (lambda a: a["points"].__setitem__((2, 0, 0), np.inf), r"sample 2 has NaN or infinite"),
    (lambda a: a.update(points=np.zeros((5, 16), np.float32)), r"points must have shape \[N, P, 3\], got \[5, 16\]"),
    (lambda a: a.update(labels=np.array([0, 1, 0, 5, 0])), r"sample 3 has label 5, expected 0\.\.1"),
    (lambda a: a.update(labels=np.array([0, 1, 0])), r"5 point clouds but 3 labels"),
    (lambda a: a.update(points=np.zeros((5, 8, 3), np.float32)), r"shapes have 8 points, fewer than the 16 asked"),
    (lambda a: a.pop("labels"), r"missing arrays \['labels'\]"),
    (lambda a: a.update(points=np.zeros((0, 16, 3), np.float32), labels=np.zeros(0, np.int64)), r"holds no shapes"),
])
def test_bad_input_names_file_sample_and_expectation(tmp_path, damage, message):
    arrays = _good_arrays()
    damage(arrays)
    _write_npz(tmp_path, **arrays)
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset(tmp_path, "train", 16)
    assert str(tmp_path / "train.npz") in str(info.value)


def test_unreadable_and_missing_files_are_named(tmp_path):
    (tmp_path / "train.npz").write_bytes(b"this is not a zip file")
    (tmp_path / "classes.txt").write_text("a\nb\n")
    with pytest.raises(DatasetError, match=r"train\.npz: unreadable npz file"):
        load_dataset(tmp_path, "train", 16)
    with pytest.raises(DatasetError, match=r"not a dataset directory"):
        load_dataset(tmp_path / "nowhere", "train", 16)
