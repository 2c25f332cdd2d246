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
    with pytest.raises(RecordStoreError, match="no complete store in catalog"):
        find_store("0000", fingerprint, catalog)
