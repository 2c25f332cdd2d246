"""store inspect: per-array sizes and teacher statistics, computed lazily, equal to a direct reading."""

import numpy as np

from pointdistill.records import inspect_store, open_store, store_summary


def test_inspect_reports_sizes_and_teacher_statistics_of_the_records(recorded_store):
    report = inspect_store(recorded_store)
    group = open_store(recorded_store)
    logits = group["logits"][:].astype(np.float32)
    predicted = logits.argmax(axis=2)  # [N, A]
    majority = np.array([np.bincount(row).max() for row in predicted])
    stats = report["teacher_on_records"]
    assert stats["accuracy"] == store_summary(recorded_store)["teacher_accuracy"]
    assert stats["agreement"] == majority.sum() / predicted.size
    assert stats["unanimous"] == np.mean(majority == predicted.shape[1])
    assert report["records_done"] == predicted.size
    assert report["arrays"]["pooled"]["shape"] == list(group["pooled"].shape)
    assert report["bytes_stored"] == sum(a["bytes_stored"] for a in report["arrays"].values()) > 0
    assert report["attributes"]["teacher"]["weights_sha256"] == group.attrs["teacher"]["weights_sha256"]
    params = group["params"][:]
    ranges = report["recorded_ranges"]
    assert ranges["params_min"] == params.min(axis=(0, 1)).tolist()
    assert ranges["params_max"] == params.max(axis=(0, 1)).tolist()
    assert ranges["pooled_abs_max"] == float(np.abs(group["pooled"][:]).max())


def test_inspect_counts_only_done_chunks(recorded_store, tmp_path):
    import shutil

    import zarr

    copy = tmp_path / "partial.zarr"
    shutil.copytree(recorded_store, copy)
    group = zarr.open_group(str(copy), mode="r+")
    group["done"][0] = 0
    group.attrs["status"] = "recording"
    report = inspect_store(str(copy))
    chunk = group.attrs["chunk_shapes"]
    assert report["records_done"] == (group["labels"].shape[0] - chunk) * group["logits"].shape[1]
