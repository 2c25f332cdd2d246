import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from pointdistill.records import verify_store


@pytest.fixture()
def store_copy(recorded_store, tmp_path):
    copy = tmp_path / "records.zarr"
    shutil.copytree(recorded_store, copy)
    return copy


def test_an_intact_store_verifies_and_its_records_match_the_teacher(store_copy, teacher_path, shapes_dir):
    report = verify_store(str(store_copy), teacher=teacher_path, dataset=shapes_dir, sample=20)
    assert report["ok"] and not report["damaged"] and report["chunks"] == 5
    assert report["teacher_check"]["records"] == 20 and report["teacher_check"]["within_fp16"]


def test_a_chunk_damaged_on_disk_is_named_by_its_shape_range(store_copy):
    chunk_file = Path(store_copy) / "pooled" / "c" / "2" / "0" / "0"
    data = bytearray(chunk_file.read_bytes())
    data[10] ^= 0x55
    chunk_file.write_bytes(bytes(data))
    report = verify_store(str(store_copy))
    assert not report["ok"]
    assert [(d["array"], d["chunk"], d["shapes"]) for d in report["damaged"]] == [("pooled", 2, [32, 48])]


def test_altered_records_fail_the_teacher_check(store_copy, teacher_path, shapes_dir):
    group = zarr.open_group(str(store_copy), mode="r+")
    group["logits"][:] = (group["logits"][:].astype(np.float32) + 0.5).astype(np.float16)
    report = verify_store(str(store_copy), teacher=teacher_path, dataset=shapes_dir, sample=8)
    assert not report["ok"] and not report["teacher_check"]["within_fp16"]
    assert report["teacher_check"]["max_abs_difference"]["logits"] == pytest.approx(0.5, abs=0.01)


def test_params_that_do_not_come_from_the_generator_are_found(store_copy):
    group = zarr.open_group(str(store_copy), mode="r+")
    group["params"][20, 1, 0] = 1.0
    assert verify_store(str(store_copy))["params_mismatch"] == [1]


def test_cli_verify_exits_1_and_prints_the_damaged_range(store_copy):
    import subprocess
    import sys

    chunk_file = Path(store_copy) / "logits" / "c" / "4" / "0" / "0"
    chunk_file.write_bytes(chunk_file.read_bytes()[:-3])
    result = subprocess.run([sys.executable, "-m", "flows.cli", "store", "verify", str(store_copy)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "DAMAGED  logits chunk 4 (shapes 64..71)" in result.stdout
    assert "PROBLEMS FOUND" in result.stdout
