"""Storage options resolution: which fsspec options a URL gets from the configuration."""

import json

import pytest

from pointdistill.storage import OPTIONS_ENV, StorageConfigError, storage_options_for


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
