import os
import subprocess
import sys

import pytest

from pointdistill.records import RecordStoreError, find_store, list_catalog, open_store, register_store


def test_register_list_and_find(recorded_store, tmp_path):
    catalog = str(tmp_path / "catalog")
    assert list_catalog(catalog) == []
    row = register_store(recorded_store, catalog)
    attrs = open_store(recorded_store).attrs.asdict()
    assert row["teacher_sha256"] == attrs["teacher"]["weights_sha256"] and row["num_shapes"] == 72
    assert row["augmentations"] == 3 and row["status"] == "complete" and row["bytes"] > 0
    register_store(recorded_store, catalog)  # re-registering refreshes, never duplicates
    assert len(list_catalog(catalog)) == 1
    assert len(list(tmp_path.joinpath("catalog").glob("*.parquet"))) == 1
    sha, fingerprint = row["teacher_sha256"], row["dataset_fingerprint"]
    assert list_catalog(catalog, teacher=sha[:10]) and list_catalog(catalog, dataset=fingerprint[:10])
    assert list_catalog(catalog, teacher="ffff") == []
    assert find_store(sha[:12], fingerprint[:12], catalog) == recorded_store
    with pytest.raises(RecordStoreError, match="no usable complete store in catalog"):
        find_store("0000", fingerprint, catalog)


def _write_row(catalog, name: str, row: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pointdistill.records.catalog import CATALOG_SCHEMA

    pq.write_table(pa.Table.from_pylist([row], schema=CATALOG_SCHEMA), f"{catalog}/{name}.parquet")


def test_rows_that_do_not_hold_from_here_are_skipped_with_a_warning(recorded_store, tmp_path, monkeypatch):
    catalog = str(tmp_path / "catalog")
    good = register_store(recorded_store, catalog)
    newer = {**good, "created": "2999-01-01T00:00:00+00:00"}
    _write_row(catalog, "relative", {**newer, "store_uri": "records.zarr"})
    _write_row(catalog, "memory", {**newer, "store_uri": "memory://records.zarr"})
    _write_row(catalog, "gone", {**newer, "store_uri": str(tmp_path / "deleted.zarr")})
    other = {**newer, "teacher_sha256": good["teacher_sha256"][:8] + "0" * 56}  # the store names another teacher
    _write_row(catalog, "lying", other)
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning) as caught:
        assert find_store(good["teacher_sha256"][:8], good["dataset_fingerprint"], catalog) == recorded_store
    reasons = " | ".join(str(w.message) for w in caught)
    assert "a relative path" in reasons and "in-memory store" in reasons and "no record store here" in reasons
    assert "teacher_sha256 '" + other["teacher_sha256"] in reasons and "in the store" in reasons


def test_registered_paths_are_absolute_and_memory_stores_are_refused(recorded_store, tmp_path, monkeypatch):
    import os

    monkeypatch.chdir(os.path.dirname(recorded_store))
    row = register_store(os.path.basename(recorded_store), str(tmp_path / "catalog"))
    assert row["store_uri"] == recorded_store
    with pytest.raises(RecordStoreError, match="in-memory store cannot be catalogued"):
        register_store("memory://somewhere.zarr", str(tmp_path / "catalog"))


def test_store_ls_escapes_control_characters(recorded_store, tmp_path, capsys):
    from flows.cli import main

    catalog = str(tmp_path / "catalog")
    row = register_store(recorded_store, catalog)
    _write_row(catalog, "hostile", {**row, "dataset_name": "evil\x1b[2J\x07name", "store_uri": "s3://b/\x1b]0;x\x07"})
    assert main(["store", "ls", "--catalog", catalog]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "evil\\x1b[2J\\x07" in out


READ_IN_A_FRESH_PROCESS = """
import os, sys
from pointdistill.parquet import parquet_bytes, parquet_rows
path = sys.argv[1]
with open(path, "wb") as f:
    f.write(parquet_bytes([{"store_uri": "/x.zarr", "classes": ["a", "b"], "bytes": 1}]))
before = len(os.listdir("/proc/self/task"))
with open(path, "rb") as f:
    rows = parquet_rows(f) + parquet_rows(path)
print(rows[0]["classes"] == ["a", "b"] and len(rows) == 2, before, len(os.listdir("/proc/self/task")))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_reading_catalog_rows_starts_no_arrow_thread(tmp_path):
    """A command that exits while Arrow's threads live can abort in their teardown (`store ls`
    exited -6 once in CI): reading rows must start none (pq.read_table starts two)."""
    out = subprocess.run([sys.executable, "-c", READ_IN_A_FRESH_PROCESS, str(tmp_path / "rows.parquet")],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "True" and out[1] == out[2], out
