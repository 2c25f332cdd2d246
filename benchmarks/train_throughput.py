"""Training-step throughput: the autograd reference against the fused CPU kernel ("fast").

    python benchmarks/train_throughput.py [--points $MN40] [--rounds 3] [--num-points 1024,512]

For the float PointNet teacher and the LSR+EMA (without real-valued shortcuts, with them around
the hidden point layers, and around the head layers too) and XNOR+MAX students (ModelNet40 widths: point layers 64, 64, 64, 128, 1024, head 512, 256, 40
classes), at 1024 and 512 points, batch 32: one
full training step (forward, the distillation loss of train-student — CE + KD + matrix-1 — or
CE for the teacher, backward, Adam). Every measurement runs in its own process, and the rounds
alternate reference and fast so that both see the same machine load; the best round counts.
Per row: samples/s of each, the ratio fast / reference, the fraction of this machine's measured
sgemm peak that the dense-equivalent FLOPs (3 x the forward's multiply-adds x 2) reach, and the
peak memory of training (resident set growth from before the model is built: parameters, Adam
state and a step's activations). Each process keeps its freed memory and flushes denormals as the
training loops do (pointdistill.cpu_training), for both kernels.
Ends with the line `student speed-up at 1024 points: <R>x` (LSR+EMA) and, per point count, what
the shortcuts cost: the fast step with them (point layers; all) over the fast step without (best
rounds of one run).

    python benchmarks/train_throughput.py --points $MN40 --compare-paths [--rounds 5]

instead times the fast LSR+EMA step at 1024 points on every popcount path this CPU runs
($POINTDISTILL_TRAIN_KERNEL per process, the paths alternating round by round), with each path's
ratio to the slowest one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

POINT_WIDTHS, HEAD_WIDTHS, CLASSES = (64, 64, 64, 128, 1024), (512, 256), 40
ROWS = [("teacher", None, None), ("LSR+EMA", "lsr", "ema"), ("LSR+EMA+shortcuts", "lsr", "ema"),
        ("LSR+EMA+all shortcuts", "lsr", "ema"), ("XNOR+MAX", "xnor", "max")]
SHORTCUTS = {"LSR+EMA+shortcuts": {"shortcuts": True},  # row -> the student's shortcut switches
             "LSR+EMA+all shortcuts": {"shortcuts": True, "head_shortcuts": True}}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> None:
    """Start the process's peak resident size (VmHWM) afresh from its current size (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return 1024 * int(next(line for line in f if line.startswith("VmHWM:")).split()[1])


def _clouds(points_dir: str | None, batch: int, num_points: int) -> torch.Tensor:
    if points_dir is None:
        cloud = torch.randn(batch, num_points, 3, generator=torch.Generator().manual_seed(0))
        return cloud / cloud.norm(dim=2, keepdim=True)
    with np.load(os.path.join(points_dir, "train.npz"), allow_pickle=False) as data:
        return torch.from_numpy(np.ascontiguousarray(data["points"][:batch, :num_points]))


def best_step_seconds(step, steps: int) -> float:
    """One warm-up call of ``step``, then the fastest of ``steps`` timed calls, in seconds."""
    step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(row: str, kernel: str, num_points: int, batch: int, steps: int, points_dir: str | None) -> dict:
    """One process, one contender: seconds per step (best of ``steps``) and the peak RSS growth."""
    from pointdistill.binary import initialize_binary_scales
    from pointdistill.distill import student_spec
    from pointdistill.losses import LossConfig, LossTargets, total_loss
    from pointdistill.models import PointNetConfig, create_model, model_spec
    from pointdistill.cpu_training import prepare_cpu_training
    from pointdistill.optimizer import adam

    prepare_cpu_training()  # as the training loops do on the CPU, for both kernels
    points = _clouds(points_dir, batch, num_points)
    _reset_peak_rss()  # the dataset load's own peak does not count
    base = _rss_bytes()
    torch.manual_seed(0)
    teacher = model_spec("pointnet", PointNetConfig(CLASSES, POINT_WIDTHS, HEAD_WIDTHS))
    quantizer, aggregation = dict((r, (q, a)) for r, q, a in ROWS)[row]
    spec = teacher if quantizer is None else student_spec(teacher, quantizer, aggregation, **SHORTCUTS.get(row, {}))
    model = create_model(spec)
    labels = torch.randint(0, CLASSES, (batch,))
    targets = LossTargets(labels, torch.randn(batch, CLASSES), torch.randn(batch, POINT_WIDTHS[-1]))
    loss = LossConfig() if quantizer is None else LossConfig(kd_weight=0.5, reg_weight=0.01)
    if quantizer is not None:
        initialize_binary_scales(model, points)
    model.training_kernel = kernel
    model.train()
    optimizer = adam(model.parameters(), lr=1e-3)
    macs = sum(p.numel() * (num_points if name.startswith(("stem", "trunk")) else 1)  # per cloud
               for name, p in model.named_parameters() if p.ndim >= 2)

    def step():
        out = model(points)
        total, _ = total_loss(loss, out.logits, out.pooled, targets)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    seconds = best_step_seconds(step, steps)
    return {"seconds": seconds, "peak_bytes": _peak_rss_bytes() - base, "train_flops": 3 * 2 * macs * batch}


def sgemm_peak() -> float:
    """FLOP/s of a large float32 matmul with torch's threads (best of 5)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 2048 ** 3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", default=None, help="dataset directory with train.npz (real clouds)")
    # 5 x 5: on a shared 2-core machine single steps move by 15-20 %; 3 x 3 left the best-of noisy
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per contender")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round (after one warm-up)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--num-points", default="1024,512", help="point counts, comma-separated")
    parser.add_argument("--compare-paths", action="store_true",
                        help="time the fast LSR+EMA step at the first --num-points on every popcount path instead")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        row, kernel, num_points = args.measure.split(",")
        print(json.dumps(measure(row, kernel, int(num_points), args.batch, args.steps, args.points)))
        return

    def run(row, kernel, num_points, path=None):
        command = [sys.executable, __file__, "--measure", f"{row},{kernel},{num_points}", "--batch", str(args.batch),
                   "--steps", str(args.steps)] + (["--points", args.points] if args.points else [])
        env = dict(os.environ, **({KERNEL_ENV: path} if path else {}))
        return json.loads(subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout)

    from pointdistill.binary.popcount import KERNEL_ENV, available_paths, resolve_path

    if args.compare_paths:
        num_points, paths = int(args.num_points.split(",")[0]), available_paths()
        print(f"fast LSR+EMA step, batch {args.batch}, {num_points} points, torch threads {torch.get_num_threads()}, "
              f"clouds: {args.points or 'random'}; best of {args.rounds} alternating rounds x {args.steps} steps")
        best = dict.fromkeys(paths, float("inf"))
        for _ in range(args.rounds):
            for path in paths:
                best[path] = min(best[path], run("LSR+EMA", "fast", num_points, path)["seconds"])
        slowest = max(best.values())
        for path in paths:
            print(f"{path:<8} {args.batch / best[path]:8.1f} samples/s  {slowest / best[path]:5.2f}x")
        return

    peak = sgemm_peak()
    print(f"batch {args.batch}, torch threads {torch.get_num_threads()}, popcount path {resolve_path()} "
          f"(available: {', '.join(available_paths())}), sgemm peak {peak / 1e9:.1f} GFLOP/s, "
          f"clouds: {args.points or 'random'}; best of {args.rounds} alternating rounds x {args.steps} steps")
    print(f"{'model':<21} {'points':>6} {'reference/s':>12} {'fast/s':>8} {'ratio':>6} {'peak% ref':>9} "
          f"{'peak% fast':>10} {'mem ref MB':>10} {'mem fast MB':>11}")
    speedup, fast_seconds = None, {}
    for num_points in (int(n) for n in args.num_points.split(",")):
        for row, _, _ in ROWS:
            best = {"reference": None, "fast": None}
            for _ in range(args.rounds):
                for kernel in ("reference", "fast"):
                    result = run(row, kernel, num_points)
                    if best[kernel] is None or result["seconds"] < best[kernel]["seconds"]:
                        best[kernel] = result
            ref, fast = best["reference"], best["fast"]
            rate_ref, rate_fast = args.batch / ref["seconds"], args.batch / fast["seconds"]
            ratio = rate_fast / rate_ref
            fast_seconds[row, num_points] = fast["seconds"]
            print(f"{row:<21} {num_points:>6} {rate_ref:>12.1f} {rate_fast:>8.1f} {ratio:>5.2f}x "
                  f"{100 * ref['train_flops'] / ref['seconds'] / peak:>8.1f}% "
                  f"{100 * fast['train_flops'] / fast['seconds'] / peak:>9.1f}% "
                  f"{ref['peak_bytes'] / 2**20:>10.0f} {fast['peak_bytes'] / 2**20:>11.0f}", flush=True)
            if row == "LSR+EMA" and num_points == 1024:
                speedup = ratio
    if speedup is not None:
        print(f"student speed-up at 1024 points: {speedup:.2f}x")
    for num_points in (int(n) for n in args.num_points.split(",")):
        plain = fast_seconds["LSR+EMA", num_points]
        print(f"shortcuts at {num_points} points: the fast step takes "
              f"{fast_seconds['LSR+EMA+shortcuts', num_points] / plain:.2f}x the plain student's "
              f"({fast_seconds['LSR+EMA+all shortcuts', num_points] / plain:.2f}x with head shortcuts too)")


if __name__ == "__main__":
    main()
