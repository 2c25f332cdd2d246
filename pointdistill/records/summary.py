"""What a record store holds: sizes, completeness and the teacher's accuracy on its records."""

from __future__ import annotations

import numpy as np

from pointdistill.records.schema import (
    RECORD_ARRAYS, check_chunks_present, layout_of, open_store, read_block, store_fingerprint,
)


def stored_bytes(group) -> dict[str, int]:
    """Bytes on storage per array of an open record store, and their ``total``."""
    sizes = {name: int(group[name].nbytes_stored()) for name in (*RECORD_ARRAYS, "done")}
    return {**sizes, "total": sum(sizes.values())}


def teacher_test_figure(teacher: dict) -> str:
    """The teacher's own test accuracy as its checkpoint reports it, naming the dataset it was
    measured on (a store's attrs["teacher"]); "" when the checkpoint has none. It is the
    training run's figure, not measured by the recording."""
    test_oa = teacher["metrics"].get("test_overall_accuracy")
    if test_oa is None:
        return ""
    dataset = (teacher.get("trained_on") or {}).get("name", "its training dataset")
    return f"test OA {test_oa:.4f} on {dataset}'s test split (from its training run)"


def store_summary(uri: str, storage_options: dict | None = None) -> dict:
    """Summary of the store at ``uri`` (read-only). Accuracy covers the completed chunks only;
    every done chunk of every array is read, so damage is a RecordStoreError naming it.

    Keys: uri, status, fingerprint (of the recording's identity, schema.store_fingerprint), N, A,
    C, D, chunks_done, chunks, bytes_stored (per array and total),
    bytes_per_record, teacher_accuracy (argmax of recorded logits vs label, in [0, 1]), and
    teacher / dataset identities.
    """
    group = open_store(uri, storage_options)
    attrs = group.attrs.asdict()
    layout = layout_of(group, uri)
    done = group["done"][:].astype(bool)
    check_chunks_present(group, uri, layout, np.flatnonzero(done))
    correct = total = 0
    for chunk in np.flatnonzero(done):  # every array read: damage anywhere is named, never summarised
        blocks = {name: read_block(group, uri, name, layout, int(chunk)) for name in RECORD_ARRAYS}
        logits, labels = blocks["logits"], blocks["labels"]
        correct += int((logits.argmax(axis=2) == labels[:, None]).sum())
        total += logits.shape[0] * logits.shape[1]
    sizes = stored_bytes(group)
    records = layout.num_shapes * layout.augmentations
    return {
        "uri": uri,
        "status": attrs.get("status"),
        "fingerprint": store_fingerprint(attrs),
        "N": layout.num_shapes, "A": layout.augmentations, "C": layout.num_classes, "D": layout.pooled_dim,
        "chunks_done": int(done.sum()), "chunks": layout.num_chunks,
        "bytes_stored": sizes,
        "bytes_per_record": sizes["total"] / records,
        "teacher_accuracy": correct / total if total else float("nan"),
        "teacher": {"model": attrs["teacher"]["model"]["name"], "weights_sha256": attrs["teacher"]["weights_sha256"],
                    "test_overall_accuracy": attrs["teacher"]["metrics"].get("test_overall_accuracy"),
                    "test_figure": teacher_test_figure(attrs["teacher"])},
        "dataset": {"name": attrs["dataset"]["name"], "fingerprint": attrs["dataset"]["fingerprint"],
                    "num_points": attrs["dataset"]["num_points"]},
        "seed": attrs["seed"],
        "created": attrs["created"],
    }


def format_summary(summary: dict) -> str:
    """Human-readable lines for ``store_summary``."""
    b = summary["bytes_stored"]
    lines = [
        f"store        {summary['uri']}  ({summary['status']}, {summary['chunks_done']}/{summary['chunks']} chunks)",
        f"fingerprint  {summary['fingerprint']}",
        f"records      N={summary['N']} shapes x A={summary['A']} augmentations = {summary['N'] * summary['A']}"
        f"  (C={summary['C']} classes, D={summary['D']} pooled channels)",
        f"teacher      {summary['teacher']['model']} sha256 {summary['teacher']['weights_sha256'][:12]}"
        + (f"  {summary['teacher']['test_figure']}" if summary["teacher"]["test_figure"] else ""),
        f"dataset      {summary['dataset']['name']} fingerprint {summary['dataset']['fingerprint'][:12]}"
        f"  {summary['dataset']['num_points']} points/shape",
        f"accuracy     teacher on the recorded augmentations: {summary['teacher_accuracy']:.4f}",
        f"size         {b['total']:,} bytes stored = {summary['bytes_per_record']:.1f} bytes/record"
        f"  (params {b['params']:,}, logits {b['logits']:,}, pooled {b['pooled']:,}, labels {b['labels']:,})",
    ]
    return "\n".join(lines)
