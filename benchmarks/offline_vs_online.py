"""Student epoch time and peak memory: replaying records vs running the teacher online (KD).

    python benchmarks/offline_vs_online.py ../shared/data/modelnet40_1024 --shapes 512
    python benchmarks/offline_vs_online.py DATA --shapes 2048 --device cuda --model dgcnn --epochs 2

Records a store once (a random full-size teacher of the registered --model, PointNet by default,
unless --teacher is given; speed and memory do not depend on the weights), then trains the same
binary PointNet student (LSR+EMA, KD + matrix-1, through the pooled adapter where the teacher's
pooled width differs) for --epochs epochs per run, from the records (offline) and with the
teacher run live on the same rebuilt inputs (online). The time is the last epoch's (with
--epochs 2 it leaves out the first epoch's one-off costs: CUDA's start-up, page faults). Each run
is its own process, so its peak memory is its own (resident set on the CPU, allocated device
memory on CUDA); runs alternate and each figure is the best of --repeats.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys
import torch
from pointdistill.distill import StudentJob, StudentTrainConfig, run_student_job
from pointdistill.losses import LossConfig
from pointdistill.parquet import parquet_rows
store, dataset, out, teacher, batch, device, epochs = sys.argv[1:8]
job = StudentJob(store=store, dataset=dataset, out=out, quantizer="lsr", aggregation="ema",
                 loss=LossConfig(kd_weight=0.5, reg_weight=0.01),
                 train=StudentTrainConfig(epochs=int(epochs), batch_size=int(batch), device=device),
                 online_teacher=teacher or None)
summary = run_student_job(job, progress=False)
seconds = parquet_rows(summary["outputs"]["metrics"])[-1]["seconds"]
peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print(json.dumps({"seconds": seconds, "peak_bytes": peak}))
"""


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from record_throughput import subset_dataset, teacher_checkpoint

    from pointdistill.records import RecordingJob, record_in_process

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--teacher", default=None)
    parser.add_argument("--model", default="pointnet", help="registered teacher model when no --teacher")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per run; the last one is timed")
    parser.add_argument("--shapes", type=int, default=512)
    parser.add_argument("--num-points", type=int, default=1024)
    parser.add_argument("--augmentations", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="offline-vs-online-"))
    try:
        dataset = subset_dataset(args.dataset, args.shapes, args.num_points, work / "data")
        teacher = teacher_checkpoint(args.teacher, args.model, dataset, args.num_points, work / "teacher.pt")
        job = RecordingJob(teacher=teacher, dataset=dataset, store=str(work / "records.zarr"),
                           augmentations=args.augmentations, chunk_shapes=64, device=args.device)
        record_in_process(job)
        results = {"offline (replay)": [], "online (live teacher)": []}
        for repeat in range(args.repeats):
            for name, online in (("offline (replay)", ""), ("online (live teacher)", teacher)):
                run_dir = work / f"run-{'online' if online else 'offline'}-{repeat}"  # run directories never reuse
                out = subprocess.run([sys.executable, "-c", CHILD, job.store, dataset, str(run_dir), online,
                                      str(args.batch_size), args.device, str(args.epochs)],
                                     stdout=subprocess.PIPE, text=True, check=True)
                results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
        off = min(r["seconds"] for r in results["offline (replay)"])
        off_mem = min(r["peak_bytes"] for r in results["offline (replay)"])
        print(f"{args.shapes} shapes, {args.num_points} points, batch {args.batch_size}, device {args.device}, "
              f"teacher {args.teacher or args.model}, student LSR+EMA PointNet, KD + matrix-1, "
              f"epoch {args.epochs} of {args.epochs} timed, best of {args.repeats}")
        print(f"{'':24s} {'epoch s':>8s} {'peak MiB':>9s} {'time ratio':>11s} {'memory ratio':>13s}")
        for name, runs in results.items():
            seconds = min(r["seconds"] for r in runs)
            peak = min(r["peak_bytes"] for r in runs)
            print(f"{name:24s} {seconds:8.2f} {peak / 2**20:9.0f} {seconds / off:11.3f} {peak / off_mem:13.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
