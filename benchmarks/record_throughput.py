"""Records/s of the teacher alone vs `record-teacher` end to end, measured side by side.

    python benchmarks/record_throughput.py ../shared/data/modelnet40_1024 --shapes 1024

"Teacher alone" is the bare compute of a recording: rebuild every augmented cloud and run
the teacher forward in batches, in this process, nothing written. "End to end" is the
record-teacher flow on the same shapes (store creation, chunk tasks, Zarr writes with
compression and checksums, completion marks, summary, Prefect task runs), in-process
(workers=0, the same torch threads) and on a LocalCluster of 2 worker processes. The
temporary Prefect server is started once before timing. Runs alternate and each figure is
the best of --repeats, so machine noise hits both sides alike.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pointdistill.augment import AugmentPolicy, apply, params_for_shapes
from pointdistill.data import load_dataset, write_npz_split
from pointdistill.models import Checkpoint, batched_forward, create_model, load_checkpoint, save_checkpoint
from pointdistill.models.teacher_options import TeacherOptions, teacher_spec


def subset_dataset(root: str, shapes: int, num_points: int, out: Path) -> str:
    """The first ``shapes`` training shapes (train split only; test is a copy of 2 shapes)."""
    train = load_dataset(root, "train", num_points)
    pick = np.random.default_rng(0).permutation(len(train))[:shapes]
    write_npz_split(out, "train", train.points[pick], train.labels[pick], list(train.class_names))
    write_npz_split(out, "test", train.points[pick[:2]], train.labels[pick[:2]], list(train.class_names))
    return str(out)


def teacher_checkpoint(path: str | None, model_name: str, dataset: str, num_points: int, out: Path) -> str:
    """The given checkpoint, or a randomly initialised full-size teacher of the registered
    ``model_name`` (its default widths; speed does not depend on the weights)."""
    if path:
        return path
    train = load_dataset(dataset, "train", num_points)
    torch.manual_seed(0)
    model = create_model(teacher_spec(model_name, train.num_classes, TeacherOptions()))
    save_checkpoint(out, Checkpoint(spec=model.spec, state_dict=model.state_dict(),
                                    class_names=list(train.class_names),
                                    dataset={"name": train.name, "fingerprint": train.fingerprint(),
                                             "num_points": num_points}))
    return str(out)


def teacher_alone(teacher: str, dataset: str, augmentations: int, chunk_shapes: int, batch_size: int) -> float:
    """Seconds to compute every record of the dataset without storing anything."""
    model = load_checkpoint(teacher).build_model()
    train = load_dataset(dataset, "train", load_checkpoint(teacher).dataset["num_points"])
    started = time.perf_counter()
    for start in range(0, len(train), chunk_shapes):
        stop = min(start + chunk_shapes, len(train))
        params = params_for_shapes(AugmentPolicy(), 0, start, stop, augmentations)
        shapes = torch.from_numpy(train.points[start:stop]).repeat_interleave(augmentations, 0)
        batched_forward(model, apply(shapes, torch.from_numpy(params.reshape(-1, 6))), batch_size)
    return time.perf_counter() - started


def end_to_end(teacher: str, dataset: str, augmentations: int, chunk_shapes: int, batch_size: int,
               workers: int, store: Path) -> tuple[float, dict]:
    from flows.record_teacher import record_teacher

    shutil.rmtree(store, ignore_errors=True)
    started = time.perf_counter()
    summary = record_teacher(teacher=teacher, dataset=dataset, store=str(store), augmentations=augmentations,
                             chunk_shapes=chunk_shapes, batch_size=batch_size, workers=workers,
                             catalog=str(store.parent / "catalog"))  # not the working directory's store/
    return time.perf_counter() - started, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="dataset directory (npz or ModelNet40 HDF5 layout)")
    parser.add_argument("--teacher", default=None, help="teacher checkpoint (default: a random full-size --model)")
    parser.add_argument("--model", default="pointnet", help="the random teacher's registered model (pointnet, dgcnn, ...)")
    parser.add_argument("--shapes", type=int, default=512, help="training shapes to record (a fixed random subset)")
    parser.add_argument("--num-points", type=int, default=1024)
    parser.add_argument("--augmentations", type=int, default=10)
    parser.add_argument("--chunk-shapes", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from flows.runtime import embedded_api

    work = Path(tempfile.mkdtemp(prefix="record-throughput-"))
    try:
        dataset = subset_dataset(args.dataset, args.shapes, args.num_points, work / "data")
        teacher = teacher_checkpoint(args.teacher, args.model, dataset, args.num_points, work / "teacher.pt")
        records = args.shapes * args.augmentations
        common = (teacher, dataset, args.augmentations, args.chunk_shapes, args.batch_size)
        times = {"teacher alone": [], "record-teacher, in-process": [], "record-teacher, 2 Dask workers": []}
        with embedded_api():
            for _ in range(args.repeats):
                times["teacher alone"].append(teacher_alone(*common))
                seconds, summary = end_to_end(*common, workers=0, store=work / "a.zarr")
                times["record-teacher, in-process"].append(seconds)
                seconds, _ = end_to_end(*common, workers=2, store=work / "b.zarr")
                times["record-teacher, 2 Dask workers"].append(seconds)
        base = min(times["teacher alone"])
        print(f"{args.shapes} shapes x {args.augmentations} augmentations = {records} records, "
              f"{args.num_points} points, torch threads {torch.get_num_threads()}, best of {args.repeats}")
        print(f"{'':34s} {'seconds':>8s} {'records/s':>10s} {'time / teacher alone':>21s}")
        for name, values in times.items():
            best = min(values)
            print(f"{name:34s} {best:8.2f} {records / best:10.1f} {best / base:21.3f}")
        overhead = min(times["record-teacher, in-process"]) / base - 1
        print(f"store + orchestration overhead (in-process vs teacher alone): {overhead * 100:.1f}% (goal < 15%)")
        print(f"bytes per record: {summary['bytes_per_record']:.1f} "
              f"(pooled D={summary['D']} fp16, logits C={summary['C']} fp16, 6 params fp32, compressed)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
