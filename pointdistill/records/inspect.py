"""Inspecting a record store: its attributes, what each array costs on storage, and how the
teacher behaves over the recorded augmentations, computed lazily (dask.array) chunk by chunk,
so a store far larger than memory is inspected in bounded memory."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np

from pointdistill.records.schema import check_chunks_present, layout_of, open_store, read_block
from pointdistill.records.summary import stored_bytes, teacher_test_figure


def _done_chunks(group, uri: str, layout, done: np.ndarray, name: str) -> da.Array:
    """The done chunks of one array, concatenated lazily; each is read (and checked: checksum,
    finiteness) by read_block, so damage is named by array, chunk and shapes."""
    shape, _, dtype = layout.array_specs()[name]
    blocks = []
    for chunk in done:
        start, stop = layout.chunk_range(int(chunk))
        read = dask.delayed(read_block)(group, uri, name, layout, int(chunk))
        blocks.append(da.from_delayed(read, shape=(stop - start, *shape[1:]), dtype=dtype))
    return da.concatenate(blocks) if blocks else da.zeros((0, *shape[1:]), dtype=dtype)


def _array_sizes(group) -> dict[str, dict]:
    sizes = {}
    for name, stored in stored_bytes(group).items():
        if name == "total":
            continue
        array = group[name]
        sizes[name] = {"shape": list(array.shape), "chunks": list(array.chunks), "dtype": str(array.dtype),
                       "bytes": int(array.nbytes), "bytes_stored": stored,
                       "compression_ratio": array.nbytes / stored if stored else float("nan")}
    return sizes


def inspect_store(uri: str, storage_options: dict | None = None) -> dict:
    """Attributes, per-array sizes and teacher statistics of the store at ``uri`` (read-only).

    Every array of every done chunk is read (damage is named, never summarised). Teacher
    statistics cover the records of done chunks: ``accuracy`` (recorded argmax vs
    label), ``agreement`` (fraction of records whose argmax equals the most frequent argmax
    over the A augmentations of their shape) and ``unanimous`` (fraction of shapes whose A
    augmentations all get the same argmax); all in [0, 1], NaN for a store with no done chunk.
    ``recorded_ranges``: each augmentation parameter's min and max [6] and the largest |pooled|.
    """
    group = open_store(uri, storage_options)
    layout = layout_of(group, uri)
    done = np.flatnonzero(group["done"][:])
    check_chunks_present(group, uri, layout, done)
    logits = _done_chunks(group, uri, layout, done, "logits")  # [n, A, C], read lazily
    labels = _done_chunks(group, uri, layout, done, "labels")  # [n]
    predicted = logits.argmax(axis=2)  # [n, A]
    votes = (predicted[:, :, None] == da.arange(layout.num_classes)[None, None, :]).sum(axis=1)  # [n, C]
    majority = votes.max(axis=1)  # [n]: records of each shape agreeing with its most frequent class
    params = _done_chunks(group, uri, layout, done, "params")  # [n, A, 6]
    pooled = _done_chunks(group, uri, layout, done, "pooled")  # [n, A, D]
    shapes = int(labels.shape[0])
    records = shapes * layout.augmentations
    correct, agreeing, unanimous, params_low, params_high, pooled_max = dask.compute(
        (predicted == labels[:, None]).sum(), majority.sum(), (majority == layout.augmentations).sum(),
        params.min(axis=(0, 1)), params.max(axis=(0, 1)), abs(pooled).max(), scheduler="threads")
    sizes = _array_sizes(group)
    return {
        "uri": uri,
        "attributes": group.attrs.asdict(),
        "arrays": sizes,
        "bytes_stored": sum(s["bytes_stored"] for s in sizes.values()),
        "records_done": records,
        "teacher_on_records": {
            "accuracy": correct / records if records else float("nan"),
            "agreement": agreeing / records if records else float("nan"),
            "unanimous": unanimous / shapes if shapes else float("nan"),
        },
        "recorded_ranges": {"params_min": params_low.tolist(), "params_max": params_high.tolist(),
                            "pooled_abs_max": float(pooled_max)} if records else None,
    }


def format_inspection(report: dict) -> str:
    """Human-readable lines for ``inspect_store``."""
    attrs = report["attributes"]
    teacher, dataset = attrs["teacher"], attrs["dataset"]
    policy = attrs["augmentation"]
    stats = report["teacher_on_records"]
    test_figure = teacher_test_figure(teacher)
    lines = [
        f"store         {report['uri']}",
        f"format        {attrs['format']} v{attrs['format_version']}, status {attrs['status']}, "
        f"created {attrs['created']}",
        f"teacher       {teacher['model']['name']} sha256 {teacher['weights_sha256']}"
        + (f", {test_figure}" if test_figure else ""),
        f"dataset       {dataset['name']} ({dataset['split']}) fingerprint {dataset['fingerprint']}, "
        f"{dataset['num_shapes']} shapes x {dataset['num_points']} points, {len(dataset['class_names'])} classes",
        f"augmentation  A={attrs['augmentations_per_shape']} per shape, seed {attrs['seed']}, "
        + ", ".join(f"{k}={v}" for k, v in policy.items()),
        f"chunks        {attrs['num_chunks']} of {attrs['chunk_shapes']} shapes",
        "",
        f"{'array':8s} {'shape':>18s} {'dtype':>8s} {'bytes':>14s} {'stored':>14s} {'ratio':>6s}",
    ]
    for name, s in report["arrays"].items():
        lines.append(f"{name:8s} {'x'.join(map(str, s['shape'])):>18s} {s['dtype']:>8s} {s['bytes']:>14,d} "
                     f"{s['bytes_stored']:>14,d} {s['compression_ratio']:>6.2f}")
    lines += [
        f"{'total':8s} {'':>18s} {'':>8s} {'':>14s} {report['bytes_stored']:>14,d}",
        "",
        f"teacher over the {report['records_done']:,} recorded augmentations: accuracy {stats['accuracy']:.4f}, "
        f"agreement with its per-shape majority {stats['agreement']:.4f}, "
        f"shapes predicted unanimously {stats['unanimous']:.4f}",
    ]
    ranges = report["recorded_ranges"]
    if ranges:
        low, high = ranges["params_min"], ranges["params_max"]
        lines.append(f"recorded      scale x,y,z in [{min(low[:3]):.3f}, {max(high[:3]):.3f}], translation in "
                     f"[{min(low[3:]):.3f}, {max(high[3:]):.3f}], pooled |max| {ranges['pooled_abs_max']:.3g}")
    return "\n".join(lines)
