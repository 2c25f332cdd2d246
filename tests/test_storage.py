"""Storage: which fsspec options a URL gets from the configuration; exclusive creation."""

import json
import threading
from pathlib import Path

import pytest
from fsspec.implementations.local import LocalFileSystem

from pointdistill.storage import OPTIONS_ENV, StorageConfigError, create_exclusively, storage_options_for


@pytest.fixture()
def config(monkeypatch, tmp_path):
    path = tmp_path / "storage.json"
    monkeypatch.setenv("POINTDISTILL_STORAGE_CONFIG", str(path))
    monkeypatch.delenv(OPTIONS_ENV, raising=False)
    return path


def test_longest_prefix_wins_and_local_paths_get_none(config):
    config.write_text(json.dumps({"s3://": {"endpoint_url": "a"}, "s3://team-b/": {"endpoint_url": "b"}}))
    assert storage_options_for("s3://team-a/x.zarr") == {"endpoint_url": "a"}
    assert storage_options_for("s3://team-b/x.zarr") == {"endpoint_url": "b"}
    assert storage_options_for("gs://bucket/x.zarr") == {}
    assert storage_options_for("/data/x.zarr") == storage_options_for("file:///data/x.zarr") == {}


def test_environment_overrides_the_file_and_explicit_options_override_both(config, monkeypatch):
    config.write_text(json.dumps({"s3://": {"endpoint_url": "file"}}))
    monkeypatch.setenv(OPTIONS_ENV, json.dumps({"s3://": {"endpoint_url": "env"}}))
    assert storage_options_for("s3://b/x") == {"endpoint_url": "env"}
    assert storage_options_for("s3://b/x", {"anon": True}) == {"anon": True}


def test_a_bad_configuration_names_its_source(config, monkeypatch):
    config.write_text("{not json")
    with pytest.raises(StorageConfigError, match=str(config)):
        storage_options_for("s3://b/x")
    monkeypatch.setenv(OPTIONS_ENV, json.dumps({"s3://": "not an object"}))
    with pytest.raises(StorageConfigError, match=OPTIONS_ENV):
        storage_options_for("s3://b/x")


def test_an_exclusive_create_is_won_once_and_readers_never_see_it_partial(tmp_path):
    """Racing creators (recorders claiming a new store): one wins, and a loser reading the file
    right after losing sees the winner's whole content, never an empty or partial file."""
    fs, path = LocalFileSystem(), str(tmp_path / "claim.json")
    payloads = [bytes([i]) * (4 << 20) for i in range(6)]
    barrier = threading.Barrier(len(payloads))
    results: dict[int, tuple[bool, bytes]] = {}

    def contend(i: int) -> None:
        barrier.wait()
        won = create_exclusively(fs, path, payloads[i])
        results[i] = (won, Path(path).read_bytes())

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(payloads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, (won, _) in results.items() if won]
    assert len(winners) == 1
    assert all(seen == payloads[winners[0]] for _, seen in results.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["claim.json"]  # no private files left
