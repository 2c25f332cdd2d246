"""Damage never trains silently: a done chunk whose data is gone, NaN/inf records and attributes
that disagree with the arrays are refused by every reader (summary, inspect, verify, replay),
each with a one-line error naming the store, the array and the shape range."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

import pointdistill
from pointdistill.data import load_dataset
from pointdistill.models import load_checkpoint, save_checkpoint
from pointdistill.records import (
    RecordingJob, RecordStoreError, ReplayLoader, finalize_store, inspect_store, open_store, prepare_store,
    record_chunk, store_summary, verify_store,
)

POINTS = 128


@pytest.fixture()
def store_copy(recorded_store, tmp_path):
    copy = tmp_path / "records.zarr"
    shutil.copytree(recorded_store, copy)
    return str(copy)


def readers(store: str, shapes_dir: str):
    """Every way a store is read, each as a zero-argument call."""
    train = load_dataset(shapes_dir, "train", POINTS)
    return {
        "summary": lambda: store_summary(store),
        "inspect": lambda: inspect_store(store),
        "replay in memory": lambda: ReplayLoader(store, train, 16, in_memory=True),
        "replay streamed": lambda: list(ReplayLoader(store, train, 16, in_memory=False).epoch(0)),
        "python api": lambda: pointdistill.open_records(store).read(slice(None)),
    }


def assert_every_reader_refuses(store: str, shapes_dir: str, pattern: str) -> None:
    for name, read in readers(store, shapes_dir).items():
        with pytest.raises(RecordStoreError, match=pattern) as error:
            read()
            pytest.fail(f"{name} read the damaged store")
        assert "\n" not in str(error.value), name
        assert store in str(error.value), name


def test_a_deleted_chunk_is_damage_everywhere(store_copy, shapes_dir):
    (Path(store_copy) / "params" / "c" / "1" / "0" / "0").unlink()  # reads back as zeros
    report = verify_store(store_copy)
    assert not report["ok"]
    assert [(d["array"], d["chunk"], d["shapes"]) for d in report["damaged"]] == [("params", 1, [16, 32])]
    assert "missing" in report["damaged"][0]["error"]
    assert_every_reader_refuses(store_copy, shapes_dir, r"params chunk 1 \(shapes 16\.\.31\)")


@pytest.mark.parametrize("array", ["params", "pooled"])
def test_flipped_bytes_in_any_record_array_are_damage_everywhere(store_copy, shapes_dir, array):
    chunk = Path(store_copy) / array / "c" / "2" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the CRC32C no longer matches
    chunk.write_bytes(bytes(data))
    assert [(d["array"], d["chunk"]) for d in verify_store(store_copy)["damaged"]] == [(array, 2)]
    assert_every_reader_refuses(store_copy, shapes_dir, rf"array {array}, chunk 2 \(shapes 32\.\.47\): unreadable")


def test_a_truncated_array_metadata_file_is_named_everywhere(store_copy, shapes_dir):
    meta = Path(store_copy) / "pooled" / "zarr.json"
    meta.write_bytes(meta.read_bytes()[:40])
    pattern = r"array pooled: unreadable metadata pooled/zarr.json \(JSONDecodeError"
    assert_every_reader_refuses(store_copy, shapes_dir, pattern)
    with pytest.raises(RecordStoreError, match=pattern):
        verify_store(store_copy)


def test_nan_records_are_damage_everywhere(store_copy, shapes_dir):
    group = zarr.open_group(store_copy, mode="r+")  # written through zarr: checksums are valid
    logits = group["logits"][32:48]
    logits[3, 1, 0] = np.nan
    logits[5, 0, 2] = np.inf
    group["logits"][32:48] = logits
    report = verify_store(store_copy)
    assert [(d["array"], d["chunk"], d["error"]) for d in report["damaged"]] == [
        ("logits", 2, "2 non-finite values (NaN or inf)")]
    assert_every_reader_refuses(store_copy, shapes_dir, r"array logits, chunk 2 \(shapes 32\.\.47\): 2 non-finite")


def test_a_teacher_giving_nan_is_refused_when_recording(teacher_path, shapes_dir, tmp_path):
    checkpoint = load_checkpoint(teacher_path)
    checkpoint.state_dict["head.0.weight"] = checkpoint.state_dict["head.0.weight"].clone()
    checkpoint.state_dict["head.0.weight"][0, 0] = float("nan")
    save_checkpoint(tmp_path / "nan-teacher.pt", checkpoint)
    job = RecordingJob(teacher=str(tmp_path / "nan-teacher.pt"), dataset=shapes_dir, augmentations=2,
                       chunk_shapes=24, store=str(tmp_path / "records.zarr"))
    plan = prepare_store(job)
    with pytest.raises(RecordStoreError, match=r"non-finite logits .* shapes 0\.\.23; chunk 0 was not written"):
        record_chunk(plan, 0)
    assert not open_store(job.store)["done"][:].any() and not finalize_store(job)


def test_every_chunk_is_stored_even_when_all_zero(teacher_path, shapes_dir, tmp_path):
    job = RecordingJob(teacher=teacher_path, dataset=shapes_dir, augmentations=1, chunk_shapes=6,
                       store=str(tmp_path / "records.zarr"))
    plan = prepare_store(job)
    record_chunk(plan, 0)  # shapes 0..5 are all class 0: the labels chunk is all zeros
    assert (tmp_path / "records.zarr" / "labels" / "c" / "0").is_file()
    assert verify_store(job.store)["damaged"] == []


@pytest.mark.parametrize("edit, pattern", [
    (lambda root: _set_attr(root, "chunk_shapes", 24), r"attribute num_chunks is 5 .* implies 3"),
    (lambda root: _set_shape(root, "logits", [72_000_000, 3, 12]), r"attribute dataset.num_shapes is 72 "),
    (lambda root: _set_shape(root, "pooled", [72, 3, 10**9]), r"array pooled is shape \[72, 3, 1000000000\]"),
])
def test_attributes_and_array_shapes_that_disagree_are_refused(store_copy, shapes_dir, edit, pattern):
    edit(Path(store_copy))
    assert_every_reader_refuses(store_copy, shapes_dir, pattern)
    with pytest.raises(RecordStoreError, match=pattern):
        verify_store(store_copy)


def _set_attr(root: Path, name: str, value) -> None:
    meta = json.loads((root / "zarr.json").read_text())
    meta["attributes"][name] = value
    (root / "zarr.json").write_text(json.dumps(meta))


def _set_shape(root: Path, array: str, shape: list[int]) -> None:
    meta = json.loads((root / array / "zarr.json").read_text())
    meta["shape"] = shape
    (root / array / "zarr.json").write_text(json.dumps(meta))
