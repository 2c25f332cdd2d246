"""The pipeline as teams run it: a real Prefect server, `pointdistill serve`, and runs started
with `prefect deployment run ... --watch`, each in its own process."""

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from pointdistill.records import open_store

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str, processes=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in processes:
            if p.poll() is not None:
                raise AssertionError(f"{what}: process {p.args} exited with {p.returncode}")
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop(process: subprocess.Popen) -> None:
    """Stop a process started in its own session, and everything it started."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=20)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Served:
    env: dict  # the environment that reaches the server
    server: subprocess.Popen
    serve: subprocess.Popen


@pytest.fixture()
def served(tmp_path):
    """A Prefect server on a free loopback port (temporary PREFECT_HOME, SQLite) and
    `pointdistill serve` against it."""
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "POINTDISTILL_CATALOG": str(tmp_path / "catalog"),
    }
    started = []
    try:
        server_log = open(tmp_path / "server.log", "w")
        server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                                   str(port)], env=env, stdout=server_log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        started.append(server)

        def healthy() -> bool:
            try:
                return httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 180, "the Prefect server", [server])
        serve_log = tmp_path / "serve.log"
        serve = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve"], env=env,
                                 stdout=open(serve_log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                                 cwd=Path(__file__).resolve().parents[2])
        started.append(serve)
        wait_for(lambda: "being served" in serve_log.read_text(), 180, "pointdistill serve", [serve])
        yield Served(env, server, serve)
    finally:
        for process in reversed(started):
            stop(process)
        assert all(p.poll() is not None for p in started), "a started process is still running"


def deployment_run(env, deployment: str, watch: bool = True, **params) -> subprocess.CompletedProcess:
    import json

    command = [str(BIN / "prefect"), "deployment", "run", deployment]
    for name, value in params.items():
        command += ["-p", f"{name}={json.dumps(value)}"]
    if watch:
        command.append("--watch")
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=420)


def test_deployments_record_then_train_a_student(served, teacher_path, shapes_dir, tmp_path):
    store, student = str(tmp_path / "records.zarr"), str(tmp_path / "student")
    env = served.env

    rejected = deployment_run(env, "record-teacher/local", watch=False, teacher=teacher_path,
                              dataset=shapes_dir, store=store, augmentations="many")
    assert rejected.returncode != 0 and "augmentations" in rejected.stdout + rejected.stderr

    recorded = deployment_run(env, "record-teacher/local", teacher=teacher_path, dataset=shapes_dir,
                              store=store, augmentations=2, chunk_shapes=24)
    assert recorded.returncode == 0 and "Completed" in recorded.stdout, recorded.stdout[-3000:]
    group = open_store(store)
    assert group.attrs["status"] == "complete" and group["done"][:].all()
    assert list((tmp_path / "catalog").glob("*.parquet")), "record-teacher did not catalogue the store"

    trained = deployment_run(env, "train-student/local", store=store, dataset=shapes_dir, out=student,
                             epochs=1, kd_weight=0.5, reg_weight=0.01, device="cpu")
    assert trained.returncode == 0 and "Completed" in trained.stdout, trained.stdout[-3000:]
    assert (Path(student) / "student.pt").is_file() and (Path(student) / "metrics.parquet").is_file()

    deployment = httpx.get(f"{env['PREFECT_API_URL']}/deployments/name/train-student/local", timeout=10).json()
    described = deployment["parameter_openapi_schema"]["properties"]["kd_weight"]  # what the UI shows
    assert described["description"] == "lambda: weight of KD against CE (0 = off)"

    stop(served.server)  # the server goes away first; Ctrl-C must still stop serve promptly
    os.killpg(served.serve.pid, signal.SIGINT)
    served.serve.wait(timeout=30)  # TimeoutExpired fails the test (it could hang in Prefect's runner shutdown)
    assert served.serve.returncode in (0, 130)  # graceful, or ended after the grace period, saying so



def test_serve_without_a_server_says_how_to_start_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "empty-prefect-home")
    run = subprocess.run([sys.executable, "-m", "flows.cli", "serve"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and "prefect server start" in run.stderr and "PREFECT_API_URL" in run.stderr
