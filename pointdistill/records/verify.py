"""Verifying a record store: every chunk read back through its checksum, optionally a sample of
records re-computed by the teacher."""

from __future__ import annotations

import numpy as np
import torch

from pointdistill.augment import AugmentPolicy, apply, params_for_shapes
from pointdistill.data import load_dataset
from pointdistill.models import batched_forward, load_checkpoint
from pointdistill.records.replay import check_store_matches
from pointdistill.records.schema import RECORD_ARRAYS, block_problem, layout_of, missing_chunks, open_store


def verify_store(uri: str, teacher: str | None = None, dataset: str | None = None, sample: int = 32,
                 seed: int = 0, storage_options: dict | None = None) -> dict:
    """Read every chunk of every record array and report damage: a chunk that fails its CRC32C
    or decompression, holds NaN/inf, or is marked done but has no data in storage (Zarr would
    read zeros); and check that the stored augmentation parameters equal the generator's. With
    ``teacher`` and ``dataset``, re-run the teacher on ``sample`` random records of done chunks.

    Returns {"damaged": [{"array", "chunk", "shapes": [start, stop), "error"}], "params_mismatch":
    [chunk, ...], "not_done": [chunk, ...], "teacher_check": {...} or None, "ok": bool}.
    """
    group = open_store(uri, storage_options)
    attrs = group.attrs.asdict()
    layout = layout_of(group, uri)
    policy = AugmentPolicy.from_dict(attrs["augmentation"])
    done = group["done"][:].astype(bool)
    missing = set(missing_chunks(group, layout, np.flatnonzero(done)))
    damaged, params_mismatch = [], []
    for chunk in range(layout.num_chunks):
        start, stop = layout.chunk_range(chunk)
        for name in RECORD_ARRAYS:
            if (name, chunk) in missing:
                damaged.append({"array": name, "chunk": chunk, "shapes": [start, stop],
                                "error": "marked done but its data is missing from storage (would read as zeros)"})
                continue
            block, problem = block_problem(group, name, start, stop)
            if problem:
                damaged.append({"array": name, "chunk": chunk, "shapes": [start, stop], "error": problem})
                continue
            if name == "params" and done[chunk]:
                expected = params_for_shapes(policy, attrs["seed"], start, stop, layout.augmentations)
                if not np.array_equal(block, expected):
                    params_mismatch.append(chunk)
    report = {"uri": uri, "chunks": layout.num_chunks, "damaged": damaged, "params_mismatch": params_mismatch,
              "not_done": [int(k) for k in np.flatnonzero(~done)], "teacher_check": None}
    if teacher is not None:
        report["teacher_check"] = _teacher_check(group, attrs, layout, teacher, dataset, sample, seed, done)
    check = report["teacher_check"]
    report["ok"] = not damaged and not params_mismatch and not report["not_done"] and (
        check is None or check["within_fp16"])
    return report


def _teacher_check(group, attrs, layout, teacher: str, dataset_root: str | None, sample: int, seed: int,
                   done: np.ndarray) -> dict:
    if dataset_root is None:
        raise ValueError("checking records against the teacher needs the dataset they were recorded on")
    checkpoint = load_checkpoint(teacher)
    if checkpoint.weights_sha256() != attrs["teacher"]["weights_sha256"]:
        raise ValueError(f"{teacher} is not the teacher of this store (weights sha256 differ)")
    dataset = load_dataset(dataset_root, "train", attrs["dataset"]["num_points"])
    check_store_matches(attrs, dataset, dataset_root)
    shapes = np.concatenate([np.arange(*layout.chunk_range(int(k))) for k in np.flatnonzero(done)])
    rng = np.random.default_rng(seed)
    i = np.sort(rng.choice(shapes, size=min(sample, shapes.size), replace=False))
    a = rng.integers(0, layout.augmentations, size=i.size)

    def picked(name: str) -> np.ndarray:
        """The sampled records (i[k], a[k]) of one array: [K, ...]."""
        return group[name].get_orthogonal_selection((i, slice(None), slice(None)))[np.arange(i.size), a]

    params = picked("params")
    clouds = apply(torch.from_numpy(dataset.points[i]), torch.from_numpy(params))
    out = batched_forward(checkpoint.build_model(), clouds, 256)
    errors = {}
    within = True
    for name, live, stored in (("logits", out.logits, picked("logits")), ("pooled", out.pooled, picked("pooled"))):
        live16 = live.numpy().astype(np.float16).astype(np.float32)
        difference = np.abs(live16 - stored.astype(np.float32))
        tolerance = 2**-10 * np.abs(live.numpy()) + 1e-3
        errors[name] = float(difference.max())
        within &= bool((difference <= tolerance).all())
    return {"records": int(i.size), "max_abs_difference": errors, "within_fp16": within}
