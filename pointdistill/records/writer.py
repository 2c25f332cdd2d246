"""Writing record stores: prepare (create or resume), record one chunk, finalise.

The unit of work is a chunk: a block of ``chunk_shapes`` consecutive training shapes with
all their augmentations, which is exactly one Zarr chunk of every record array. A chunk is
written whole and only then marked done, so concurrent writers never share a chunk and an
interrupted run leaves only not-done chunks, which the rerun fills.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import torch
import zarr

import pointdistill

from pointdistill.augment import AugmentPolicy, apply, params_for_shapes
from pointdistill.config_checks import check_at_least
from pointdistill.data import PointCloudSet, load_dataset
from pointdistill.models import Checkpoint, batched_forward, load_checkpoint, resolve_device
from pointdistill.records.schema import (
    FORMAT_NAME, FORMAT_VERSION, IDENTITY_FIELDS, RecordStoreError, RecordStoreMismatch, StoreLayout,
    compressors, open_group, recording_identity,
)
from pointdistill.storage import create_exclusively, filesystem


@dataclass(frozen=True)
class RecordingJob:
    """Everything a worker needs, as paths and numbers (never arrays) so it ships cheaply.

    teacher: checkpoint path/URL; dataset: dataset root (train split is recorded);
    store: store path/URL; num_points: points per shape (default: the teacher's).
    """

    teacher: str
    dataset: str
    store: str
    augmentations: int = 10
    chunk_shapes: int = 256
    seed: int = 0
    num_points: int | None = None
    device: str = "cpu"
    batch_size: int = 256
    policy: AugmentPolicy = field(default_factory=AugmentPolicy)
    storage_options: dict | None = None

    def __post_init__(self):
        check_at_least("RecordingJob", 1, augmentations=self.augmentations, chunk_shapes=self.chunk_shapes,
                       batch_size=self.batch_size)
        check_at_least("RecordingJob", 0, seed=self.seed)


@dataclass(frozen=True)
class RecordingPlan:
    """The store as prepared: its layout and the chunks still to record."""

    job: RecordingJob
    layout: StoreLayout
    pending: tuple[int, ...]
    teacher_sha256: str
    dataset_fingerprint: str
    num_points: int


class _WorkerCache:
    """The last few loaded teachers and datasets of this process, keyed by what identifies
    their content (weights sha256, dataset fingerprint), so a changed file is never served stale."""

    def __init__(self, size: int = 2):
        self.size = size
        self.entries: dict[tuple, object] = {}

    def get(self, key: tuple):
        return self.entries.get(key)

    def put(self, key: tuple, value) -> None:
        self.entries.pop(key, None)
        self.entries[key] = value
        while len(self.entries) > self.size:
            self.entries.pop(next(iter(self.entries)))


_TEACHERS = _WorkerCache()
_DATASETS = _WorkerCache()


def _teacher_model(path: str, sha: str, device: str) -> torch.nn.Module:
    """The teacher with weights ``sha``: loaded once per worker process and device."""
    key = (path, sha, device)
    model = _TEACHERS.get(key)
    if model is None:
        checkpoint = load_checkpoint(path)
        if checkpoint.weights_sha256() != sha:
            raise RecordStoreError(f"{path}: teacher weights changed since the store was prepared")
        model = checkpoint.build_model().to(resolve_device(device))
        _TEACHERS.put(key, model)
    return model


def _train_split(root: str, num_points: int, fingerprint: str | None = None) -> tuple[PointCloudSet, str]:
    """The training split and its fingerprint; with ``fingerprint`` given, served from this
    process's cache and checked against it."""
    if fingerprint is not None:
        cached = _DATASETS.get((root, num_points, fingerprint))
        if cached is not None:
            return cached, fingerprint
    dataset = load_dataset(root, "train", num_points)
    actual = dataset.fingerprint()
    if fingerprint is not None and actual != fingerprint:
        raise RecordStoreError(f"{root}: dataset changed since the store was prepared")
    _DATASETS.put((root, num_points, actual), dataset)
    return dataset, actual


def _num_points(job: RecordingJob, checkpoint: Checkpoint) -> int:
    return job.num_points or int(checkpoint.dataset["num_points"])


def _store_attributes(job: RecordingJob, checkpoint: Checkpoint, sha: str, dataset: PointCloudSet,
                      fingerprint: str, layout: StoreLayout) -> dict:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "status": "recording",
        "teacher": {"model": checkpoint.spec, "weights_sha256": sha, "checkpoint": job.teacher,
                    "trained_on": checkpoint.dataset, "metrics": {
                        k: v for k, v in checkpoint.metrics.items() if k != "history"}},
        "dataset": {"name": dataset.name, "split": dataset.split, "fingerprint": fingerprint,
                    "num_shapes": len(dataset), "num_points": dataset.num_points,
                    "class_names": list(dataset.class_names), "source": job.dataset},
        "augmentation": job.policy.to_dict(),
        "augmentations_per_shape": job.augmentations,
        "seed": job.seed,
        "chunk_shapes": job.chunk_shapes,
        "num_chunks": layout.num_chunks,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": {"pointdistill": pointdistill.__version__, "torch": torch.__version__,
                     "zarr": zarr.__version__, "numpy": np.__version__},
    }


def prepare_store(job: RecordingJob) -> RecordingPlan:
    """Create the store, or reopen an existing one of the same recording; list pending chunks.

    Raises RecordStoreMismatch if the store holds another teacher, dataset, policy, A, seed
    or chunking, and ValueError if teacher and dataset classes differ.
    """
    checkpoint = load_checkpoint(job.teacher)
    sha = checkpoint.weights_sha256()
    dataset, fingerprint = _train_split(job.dataset, _num_points(job, checkpoint))
    if list(checkpoint.class_names) != list(dataset.class_names):
        raise ValueError(
            f"teacher {job.teacher} was trained on classes {checkpoint.class_names[:5]}..., "
            f"dataset {dataset.source} has {list(dataset.class_names[:5])}...; they must be identical")
    probe = batched_forward(checkpoint.build_model(), torch.from_numpy(dataset.points[:2]), 2)
    layout = StoreLayout(num_shapes=len(dataset), augmentations=job.augmentations,
                         num_classes=probe.logits.shape[1], pooled_dim=probe.pooled.shape[1],
                         chunk_shapes=job.chunk_shapes)
    wanted = _store_attributes(job, checkpoint, sha, dataset, fingerprint, layout)

    claimed = _claim_recording(job, wanted)
    group = _wait_for_attributes(job, claimed)
    existing = group.attrs.asdict()
    if existing.get("format") == FORMAT_NAME:
        _refuse_other_recording(job.store, existing, wanted)
        done = group["done"][:]
    else:
        # New store, or a creation interrupted before its attributes were written (attributes
        # go last, so a store without them holds no records yet): (re)create all arrays.
        for name, (shape, chunks, dtype) in layout.array_specs().items():
            group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0,
                               compressors=compressors(), overwrite=True)
        # One metadata write: zarr's attrs.update() is MutableMapping.update, one write per key,
        # so a reader in between saw "format" without the fields after it (a spurious mismatch).
        group.update_attributes(wanted)
        done = np.zeros(layout.num_chunks, dtype=np.uint8)
    pending = [int(k) for k in np.flatnonzero(done == 0)]
    # The recorder that created the store goes forward from its first chunk, any other backward
    # from its last: recorders sharing a store (equal settings) meet once, and each skips the
    # chunks another has finished (record_chunk). The records do not depend on who writes them.
    return RecordingPlan(job=job, layout=layout, pending=tuple(pending if claimed else pending[::-1]),
                         teacher_sha256=sha, dataset_fingerprint=fingerprint, num_points=dataset.num_points)


CLAIM_FILE = "recording.json"


def _claim_recording(job: RecordingJob, wanted: dict) -> bool:
    """Create the store's claim object (its identity) if absent, atomically and whole (see
    storage.create_exclusively). Returns whether this call created it; an existing claim of
    another recording is refused, naming the fields that differ, and a damaged one is an error."""
    fs, root = filesystem(job.store, job.storage_options)
    path = root.rstrip("/") + "/" + CLAIM_FILE
    identity = recording_identity(wanted)
    fs.makedirs(root, exist_ok=True)
    if create_exclusively(fs, path, json.dumps(identity, indent=1).encode()):
        return True
    with fs.open(path, "rb") as f:
        text = f.read()
    try:
        claimed = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RecordStoreError(f"{job.store}: its claim {CLAIM_FILE} is damaged ({error}); "
                                  f"record into a new store URI") from error
    if not isinstance(claimed, dict):
        raise RecordStoreError(f"{job.store}: its claim {CLAIM_FILE} is not a JSON object; "
                                  f"record into a new store URI")
    _refuse_other_recording(job.store, claimed, wanted, identity_only=True)
    return False


def _wait_for_attributes(job: RecordingJob, claimed: bool, patience_s: float = 30.0) -> zarr.Group:
    """The store's group; when another recorder with the same settings claimed it, first wait
    (up to ``patience_s``) for it to create the arrays and attributes, so they are never made twice.
    The waiter only reads meanwhile: opening for writing creates a missing group, and Zarr's
    check-then-create could then replace the claimer's group metadata with an empty one."""
    deadline = time.monotonic() + (0 if claimed else patience_s)
    while time.monotonic() < deadline:
        try:
            if open_group(job.store, "r", job.storage_options).attrs.get("format") == FORMAT_NAME:
                break
        except FileNotFoundError:  # the claimer has not created the group yet
            pass
        time.sleep(0.2)
    return open_group(job.store, "a", job.storage_options)


def _refuse_other_recording(store: str, existing: dict, wanted: dict, identity_only: bool = False) -> None:
    """RecordStoreMismatch unless ``existing`` (store attributes, or a claim's identity) is the
    same recording as ``wanted``."""
    mine = recording_identity(wanted)
    theirs = existing if identity_only else recording_identity(existing)
    differ = [name for name in IDENTITY_FIELDS if theirs.get(name) != mine[name]]
    if differ:
        details = "; ".join(f"{name}: store has {theirs.get(name)!r}, this run {mine[name]!r}" for name in differ)
        raise RecordStoreMismatch(f"{store} already holds a different recording ({details}). "
                                  f"Record into a new store URI instead; stores are never mixed.")


def record_chunk(plan: RecordingPlan, chunk_index: int) -> dict:
    """Run the teacher over every augmentation of the shapes of one chunk and write it whole.

    Returns {chunk, start, stop, records, correct, seconds, skipped}; a chunk already done (by
    another recorder of the same store) is skipped. Safe to run in any process that can read
    the teacher, the dataset and the store; rewriting a done chunk gives the same bytes.
    """
    started = time.perf_counter()
    job, layout = plan.job, plan.layout
    start, stop = layout.chunk_range(chunk_index)
    if open_group(job.store, "r", job.storage_options)["done"][chunk_index]:  # another recorder did it
        return {"chunk": chunk_index, "start": start, "stop": stop, "records": 0, "correct": 0,
                "seconds": time.perf_counter() - started, "skipped": True}
    dataset, _ = _train_split(job.dataset, plan.num_points, plan.dataset_fingerprint)
    params = params_for_shapes(job.policy, job.seed, start, stop, job.augmentations)  # [S, A, 6]
    shapes = torch.from_numpy(dataset.points[start:stop]).repeat_interleave(job.augmentations, dim=0)
    clouds = apply(shapes, torch.from_numpy(params.reshape(-1, 6)))  # [S*A, P, 3]
    out = batched_forward(_teacher_model(job.teacher, plan.teacher_sha256, job.device), clouds, job.batch_size,
                          resolve_device(job.device))
    count = stop - start
    labels = dataset.labels[start:stop]
    logits = out.logits.reshape(count, job.augmentations, -1).numpy().astype(np.float16)
    pooled = out.pooled.reshape(count, job.augmentations, -1).numpy().astype(np.float16)
    for name, values in (("logits", logits), ("pooled", pooled)):
        if not np.isfinite(values).all():
            raise RecordStoreError(
                f"{job.store}: teacher {job.teacher} gave non-finite {name} (NaN, inf, or beyond float16's "
                f"+-65504) on shapes {start}..{stop - 1}; chunk {chunk_index} was not written")
    # Every chunk is stored, even an all-zero one, so that a missing chunk object always means damage.
    with zarr.config.set({"array.write_empty_chunks": True}):
        group = open_group(job.store, "r+", job.storage_options)
        group["params"][start:stop] = params
        group["logits"][start:stop] = logits
        group["pooled"][start:stop] = pooled
        group["labels"][start:stop] = labels.astype(np.int32)
        group["done"][chunk_index] = 1
    correct = (out.logits.argmax(1).numpy() == np.repeat(labels, job.augmentations)).sum()
    return {"chunk": chunk_index, "start": start, "stop": stop, "records": count * job.augmentations,
            "correct": int(correct), "seconds": time.perf_counter() - started, "skipped": False}


def finalize_store(job: RecordingJob) -> bool:
    """Mark the store complete if every chunk is done; returns whether it is complete."""
    group = open_group(job.store, "r+", job.storage_options)
    complete = bool(group["done"][:].all())
    if complete and group.attrs.get("status") != "complete":
        group.attrs["status"] = "complete"
    return complete


def record_in_process(job: RecordingJob) -> list[dict]:
    """Record the whole store in this process, without Dask or Prefect: prepare (or continue) it,
    record every pending chunk in turn and mark it complete. Returns record_chunk's result per
    pending chunk; raises RecordStoreError if the store is still incomplete afterwards."""
    plan = prepare_store(job)
    results = [record_chunk(plan, chunk) for chunk in plan.pending]
    if not finalize_store(job):
        raise RecordStoreError(f"{job.store}: some chunks are still not done; record again to fill them")
    return results
