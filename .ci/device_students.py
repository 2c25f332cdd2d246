"""Train several 1-bit students side by side on a lent GPU in one call, from a store recorded there.

    python3 .ci/device_students.py BUDGET_S DATASET TEACHER STORE OUT --run NAME=JSON [--run NAME=JSON ...]
        [--device cuda] [--epochs 200] [--scale-low 0.8 --scale-high 1.25 --translate 0.1]

Records TEACHER over DATASET's training split into STORE on the device (10 shape-level
augmentations a shape, the released student's milder policy unless told; keep it outside OUT: a
store is larger than what a call brings back; an existing complete store is used as it is), then
trains one student per ``--run`` in its own process, all at once, sharing the GPU.
Each run is the released student's command (Bi-Real + EMA, point and head shortcuts, KD 0.5 at
T = 2 + matrix-1 0.01, lr 3e-3, batch 32, ``--epochs`` epochs, seed 0) with JSON's changes: keys of
pointdistill.distill.StudentJob, and "loss" / "train" objects of LossConfig / StudentTrainConfig
fields, e.g. ``seed1={"train": {"seed": 1}}`` or ``kd09={"loss": {"kd_weight": 0.9}}``. The
device's test split is a smoke check (.ci/device_dataset.py), so each run is tested after its last
epoch only; export and test the students here, on the full float32 test split.

A run still going when BUDGET_S is spent is stopped; its directory (OUT/NAME.incomplete, with the
resume state after its last finished epoch) comes back, and ``--resume NAME`` in a later call,
with that directory carried back under OUT, continues it bit for bit as far as CUDA allows.
Prints one JSON line per finished run (its summary) and per stopped one.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

RELEASED = {"quantizer": "bireal", "aggregation": "ema", "shortcuts": True, "head_shortcuts": True,
            "loss": {"kd_weight": 0.5, "temperature": 2.0, "reg_weight": 0.01, "regularizer": "matrix-1"},
            "train": {"lr": 3e-3, "batch_size": 32, "seed": 0}}
FINAL_S = 30  # the last test pass, the files, margin


def student_job(name: str, changes: dict, store: str, dataset: str, out: Path, epochs: int, device: str,
                resume: bool):
    """The released student's StudentJob with ``changes`` (see the module docstring)."""
    from pointdistill.distill import StudentJob, StudentTrainConfig
    from pointdistill.losses import LossConfig

    unknown = set(changes) - set(StudentJob.__dataclass_fields__) - {"loss", "train"}
    if unknown:
        raise SystemExit(f"--run {name}: unknown StudentJob fields {sorted(unknown)}")
    top = {k: v for k, v in {**RELEASED, **changes}.items() if k not in ("loss", "train")}
    loss = LossConfig(**{**RELEASED["loss"], **changes.get("loss", {})})
    train = StudentTrainConfig(**{**RELEASED["train"], "epochs": epochs, "eval_every": epochs, "device": device,
                                  **changes.get("train", {})})
    return StudentJob(store=store, dataset=dataset, out=str(out / name), loss=loss, train=train,
                      existing="resume" if resume else "refuse", **top)


def train_one(spec: str) -> None:
    """The child process: train one student (its job as JSON arguments) and print its summary."""
    from pointdistill.distill import run_student_job

    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s %(message)s")
    args = json.loads(spec)
    job = student_job(args["name"], args["changes"], args["store"], args["dataset"], Path(args["out"]),
                      args["epochs"], args["device"], args["resume"])
    summary = run_student_job(job, progress=False)
    print("finished", json.dumps({"name": args["name"], **{k: summary[k] for k in (
        "final_test_overall_accuracy", "final_test_mean_class_accuracy")}, "out": job.out}), flush=True)


def record(args) -> None:
    """Record (or finish, or reuse) the store the students replay, as the command line says."""
    from pointdistill.augment import AugmentPolicy
    from pointdistill.records import RecordingJob, record_in_process

    started = time.time()
    record_in_process(RecordingJob(teacher=args.teacher, dataset=args.dataset, store=args.store,
                                   augmentations=args.augmentations, chunk_shapes=256, seed=0, device=args.device,
                                   policy=AugmentPolicy(args.scale_low, args.scale_high, args.translate)))
    print("recorded", json.dumps({"store": args.store, "seconds": time.time() - started}), flush=True)


def main() -> None:
    started = time.time()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("budget_s", type=float)
    parser.add_argument("dataset")
    parser.add_argument("teacher")
    parser.add_argument("store")
    parser.add_argument("out")
    parser.add_argument("--run", action="append", default=[], metavar="NAME=JSON", help="one student (repeat)")
    parser.add_argument("--resume", action="append", default=[], metavar="NAME", help="continue this run")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--augmentations", type=int, default=10)
    parser.add_argument("--scale-low", type=float, default=0.8)
    parser.add_argument("--scale-high", type=float, default=1.25)
    parser.add_argument("--translate", type=float, default=0.1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = dict(item.split("=", 1) for item in args.run)
    if not runs or len(runs) != len(args.run) or set(args.resume) - set(runs):
        raise SystemExit("give each student once with --run NAME=JSON; --resume only names given runs")
    record(args)
    threads = max(1, (os.cpu_count() or 1) // len(runs))
    children = {}
    for name, changes in runs.items():
        spec = json.dumps({"name": name, "changes": json.loads(changes), "store": args.store, "dataset": args.dataset,
                           "out": str(out), "epochs": args.epochs, "device": args.device,
                           "resume": name in args.resume})
        log = open(out / f"{name}.log", "w")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        children[name] = (subprocess.Popen([sys.executable, __file__, "--child", spec], stdout=log,
                                           stderr=subprocess.STDOUT, env=env), log)
    deadline = started + args.budget_s - FINAL_S
    while any(child.poll() is None for child, _ in children.values()) and time.time() < deadline:
        time.sleep(2)
    for name, (child, log) in children.items():
        if child.poll() is None:
            child.terminate()  # the resume state after its last finished epoch stays in NAME.incomplete
            child.wait()
            print("stopped", json.dumps({"name": name, "budget_s": args.budget_s}), flush=True)
        log.close()
        lines = (out / f"{name}.log").read_text().splitlines()
        print(next((line for line in reversed(lines) if line.startswith("finished ")),
                   f"{name}: exit {child.returncode}, last lines: " + " | ".join(lines[-3:])), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        train_one(sys.argv[2])
    else:
        main()
