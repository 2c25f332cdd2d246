"""record-teacher on a separately started Dask cluster (scheduler + 2 worker processes on
loopback), as when a team outgrows one machine, including a worker killed mid-chunk."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pointdistill.records import open_store, verify_store

BIN = Path(sys.executable).parent
ARRAYS = ("params", "logits", "pooled", "labels", "done")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=20)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture()
def dask_cluster(prefect_api, tmp_path):
    """A scheduler and 2 single-thread worker processes (with nannies) started as commands;
    every worker dies once mid-chunk (see dying_worker_preload.py), the first to get there."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    marker = tmp_path / "killed-worker-pid"
    env = {**os.environ, "POINTDISTILL_TEST_KILL_MARKER": str(marker), "OMP_NUM_THREADS": "1"}
    preload = str(Path(__file__).with_name("dying_worker_preload.py"))
    processes = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                   "--no-dashboard"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=open(tmp_path / "scheduler.log", "w"), start_new_session=True)]
    try:
        for i in range(2):
            processes.append(subprocess.Popen(
                [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--host", "127.0.0.1",
                 "--no-dashboard", "--preload", preload], env=env, stdout=subprocess.DEVNULL,
                stderr=open(tmp_path / f"worker{i}.log", "w"), start_new_session=True))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=180)
        yield address, marker
    finally:
        for process in reversed(processes):
            stop(process)


def test_a_cluster_with_a_worker_killed_mid_chunk_ends_in_the_in_process_store(
        dask_cluster, recorded_store, teacher_path, shapes_dir, tmp_path):
    from flows.record_teacher import record_teacher

    address, marker = dask_cluster
    reference = open_store(recorded_store)
    store = str(tmp_path / "cluster.zarr")
    params = dict(teacher=teacher_path, dataset=shapes_dir, store=store, dask_address=address,
                  augmentations=reference["logits"].shape[1], chunk_shapes=reference.attrs["chunk_shapes"],
                  seed=reference.attrs["seed"])
    try:
        record_teacher(**params)
    except Exception:  # the dead worker's chunk may end the run unfinished: the rerun fills it
        pass
    assert marker.exists(), "no worker died mid-chunk: the test did not exercise the failure"
    summary = record_teacher(**params)
    assert summary["status"] == "complete"
    group = open_store(store)
    for name in ARRAYS:
        assert np.array_equal(group[name][:], reference[name][:]), name
    assert verify_store(store)["ok"]
