"""record-teacher as users run it: the Prefect flow on a real server, on a real Dask cluster."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pointdistill.records import open_store


def arrays(uri):
    group = open_store(uri)
    return {name: group[name][:] for name in ("params", "logits", "pooled", "labels", "done")}


@pytest.fixture()
def flow_params(teacher_path, shapes_dir):
    return dict(teacher=teacher_path, dataset=shapes_dir, augmentations=3, chunk_shapes=16, seed=5)


def test_two_dask_worker_processes_write_the_same_store_as_one_process(prefect_api, flow_params, tmp_path):
    from flows.record_teacher import record_teacher

    in_process = record_teacher(store=str(tmp_path / "in-process.zarr"), workers=0, **flow_params)
    on_dask = record_teacher(store=str(tmp_path / "dask.zarr"), workers=2, **flow_params)
    assert in_process["status"] == on_dask["status"] == "complete"
    a, b = arrays(tmp_path / "in-process.zarr"), arrays(tmp_path / "dask.zarr")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # Another chunking gives the same augmentation parameters record for record.
    record_teacher(store=str(tmp_path / "rechunked.zarr"), workers=0, **{**flow_params, "chunk_shapes": 10})
    assert np.array_equal(arrays(tmp_path / "rechunked.zarr")["params"], a["params"])


def test_a_completed_store_reruns_as_a_no_op(prefect_api, flow_params, tmp_path):
    from flows.record_teacher import record_teacher

    store = str(tmp_path / "store.zarr")
    first = record_teacher(store=store, workers=0, **flow_params)
    before = {p: os.stat(p).st_mtime_ns for p in (tmp_path / "store.zarr").rglob("*") if p.is_file()}
    second = record_teacher(store=store, workers=0, **flow_params)
    after = {p: os.stat(p).st_mtime_ns for p in (tmp_path / "store.zarr").rglob("*") if p.is_file()}
    assert first == second and before == after


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True,
                          env={**os.environ}, timeout=300)


def test_cli_records_and_summarises_a_store(prefect_api, flow_params, tmp_path):
    store = str(tmp_path / "cli.zarr")
    result = run_cli("record-teacher", "--teacher", flow_params["teacher"], "--dataset", flow_params["dataset"],
                     "--store", store, "--augmentations", "2", "--chunk-shapes", "24", "--workers", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "N=72 shapes x A=2 augmentations = 144" in result.stdout
    summary = run_cli("store", "summary", store)
    assert summary.returncode == 0 and "complete, 3/3 chunks" in summary.stdout
    listed = run_cli("store", "ls", "--teacher", "pointnet")  # record-teacher registered it
    assert listed.returncode == 0 and store in listed.stdout


def test_cli_names_a_bad_dataset_and_exits_2(prefect_api, flow_params, tmp_path):
    (tmp_path / "empty").mkdir()  # exists (the command's own check passes), holds no dataset (the library's)
    result = run_cli("record-teacher", "--teacher", flow_params["teacher"], "--dataset", str(tmp_path / "empty"),
                     "--store", str(tmp_path / "x.zarr"), "--workers", "0")
    assert result.returncode == 2
    assert f"{tmp_path / 'empty'}: not a dataset directory" in result.stderr


def test_train_teacher_flow_saves_a_checkpoint_tied_to_its_data(prefect_api, shapes_dir, tmp_path):
    from pointdistill.parquet import parquet_rows

    from flows.train_teacher import train_teacher
    from pointdistill.data import load_dataset
    from pointdistill.models import load_checkpoint

    out = tmp_path / "teacher.pt"
    metrics = train_teacher(dataset=shapes_dir, out=str(out), num_points=64, point_widths=[8, 8, 16],
                            head_widths=[8], epochs=1, device="cpu")
    checkpoint = load_checkpoint(str(out))
    assert checkpoint.metrics["test_overall_accuracy"] == metrics["test_overall_accuracy"]
    assert checkpoint.dataset["fingerprint"] == load_dataset(shapes_dir, "train", 64).fingerprint()
    assert checkpoint.spec["point_widths"] == [8, 8, 16]
    history = parquet_rows(metrics["outputs"]["metrics"])
    assert [row["epoch"] for row in history] == [1]
    assert history[0]["test_overall_accuracy"] == metrics["test_overall_accuracy"]
    assert Path(metrics["outputs"]["curves"]).read_bytes().startswith(b"\x89PNG")
    assert metrics["outputs"]["metrics"] == f"{out}.metrics.parquet"


def test_train_student_flow_reports_accuracy_and_sizes(prefect_api, recorded_store, shapes_dir, tmp_path):
    result = run_cli("train-student", "--store", recorded_store, "--dataset", shapes_dir, "--out",
                     str(tmp_path / "student"), "--kd-weight", "0.5", "--reg-weight", "0.01", "--epochs", "1",
                     "--batch-size", "16", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "at the final epoch" in result.stdout and "bytes bit-packed" in result.stdout
    assert (tmp_path / "student" / "student.pt").exists()


def test_ablation_flow_writes_the_table(prefect_api, recorded_store, shapes_dir, tmp_path):
    from pointdistill.parquet import parquet_rows

    from flows.ablation import ablation

    result = ablation(store=recorded_store, dataset=shapes_dir, out=str(tmp_path / "ablation"), epochs=1,
                      batch_size=16, quantizers=["lsr"], aggregations=["ema"], workers=0)
    rows = parquet_rows(result["paths"]["parquet"])
    grid = {r["column"] for r in rows if r["table"] == "grid"}
    assert grid == {"original", "+KD", "+reg", "+KD+reg"}
    assert {r["column"] for r in rows if r["table"] == "regularizer"} == {
        "frobenius", "matrix-2", "entrywise-l1", "nuclear", "matrix-inf"}
    assert len(rows) == 4 + 5 + 1
    assert "| LSR+EMA |" in result["markdown"] and "NWSD" in result["markdown"]
    regularizer_table = result["markdown"].split("Regulariser alone")[1].split("Negative-weight")[0]
    assert regularizer_table.count("| LSR+EMA |") == 1


def test_train_student_finds_its_store_in_the_catalog(prefect_api, recorded_store, shapes_dir, tmp_path):
    from flows.train_student import train_student
    from pointdistill.records import register_store

    catalog = str(tmp_path / "catalog")
    row = register_store(recorded_store, catalog)
    summary = train_student(dataset=shapes_dir, out=str(tmp_path / "student"), teacher_sha=row["teacher_sha256"][:16],
                            dataset_fingerprint=row["dataset_fingerprint"][:16], catalog=catalog, epochs=1,
                            batch_size=16, device="cpu")
    assert summary["records"]["store"] == recorded_store
