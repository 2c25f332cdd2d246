"""DGCNN on the CPU, EdgeConv in its edge form against its fused form (pointdistill.models.edge_conv):
a training step, or an inference forward (what recording a DGCNN teacher and testing one run).

    python benchmarks/edge_conv.py [--points $MN40] [--batch 16] [--num-points 1024] [--rounds 3]
    python benchmarks/edge_conv.py --step inference --batch 64 [--points $MN40]

The float DGCNN teacher (k = 20, EdgeConv 64, 64, 128, 256, embedding 1024, head 512, 256, 40
classes). Training: one full step (forward, CE, backward, Adam), the autograd form ("reference")
against BatchNorm + LeakyReLU + max over the neighbours fused ("fast"). Inference: one eval-mode
forward without gradients, the [B, N, k, C] edges formed ("edge form", the pooled path switched
off) against the max over the neighbours before BatchNorm ("pooled", what the library runs).
Every measurement runs in its own process and the rounds alternate the two contenders; the best
round counts. Prints samples/s of each, the ratio, and the peak memory (resident growth from
before the model is built), as benchmarks/train_throughput.py measures it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

from train_throughput import _clouds, _peak_rss_bytes, _reset_peak_rss, _rss_bytes, best_step_seconds

CLASSES = 40
CONTENDERS = {"training": ("reference", "fast"), "inference": ("edge form", "pooled")}


def measure(step_kind: str, contender: str, num_points: int, batch: int, steps: int, points_dir: str | None) -> dict:
    """One process, one contender: seconds per step (best of ``steps``) and the peak RSS growth."""
    from pointdistill.cpu_training import prepare_cpu_training
    from pointdistill.models import create_model, dgcnn, model_spec
    from pointdistill.models.dgcnn import DGCNNConfig
    from pointdistill.optimizer import adam

    prepare_cpu_training()
    points = _clouds(points_dir, batch, num_points)
    _reset_peak_rss()
    base = _rss_bytes()
    torch.manual_seed(0)
    model = create_model(model_spec("dgcnn", DGCNNConfig(CLASSES)))
    if step_kind == "inference":
        model.eval()
        if contender == "edge form":
            dgcnn.inference_edge_conv_applies = lambda *args: False

        def forward():
            with torch.no_grad():
                model(points)

        seconds = best_step_seconds(forward, steps)
        return {"seconds": seconds, "peak_bytes": _peak_rss_bytes() - base}
    model.train()
    model.training_kernel = contender
    labels = torch.randint(0, CLASSES, (batch,))
    optimizer = adam(model.parameters(), lr=1e-3)

    def step():
        loss = torch.nn.functional.cross_entropy(model(points).logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = best_step_seconds(step, steps)
    return {"seconds": seconds, "peak_bytes": _peak_rss_bytes() - base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", default=None, help="dataset directory with train.npz (real clouds)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per contender")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round (after one warm-up)")
    parser.add_argument("--step", choices=sorted(CONTENDERS), default="training")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--num-points", type=int, default=1024)
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.step, args.measure, args.num_points, args.batch, args.steps, args.points)))
        return
    print(f"DGCNN {args.step} step, batch {args.batch}, {args.num_points} points, k = 20, torch threads "
          f"{torch.get_num_threads()}, clouds: {args.points or 'random'}; best of {args.rounds} alternating rounds "
          f"x {args.steps} steps")
    best = {}
    for _ in range(args.rounds):
        for kernel in CONTENDERS[args.step]:
            command = [sys.executable, __file__, "--step", args.step, "--measure", kernel, "--batch", str(args.batch),
                       "--num-points", str(args.num_points), "--steps", str(args.steps)]
            command += ["--points", args.points] if args.points else []
            result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            if kernel not in best or result["seconds"] < best[kernel]["seconds"]:
                best[kernel] = result
    for kernel, result in best.items():
        print(f"{kernel:<10} {args.batch / result['seconds']:8.2f} samples/s  {result['seconds']:7.3f} s/step  "
              f"peak memory {result['peak_bytes'] / 2**20:7.0f} MB")
    plain, fused = (best[name] for name in CONTENDERS[args.step])
    print(f"fused EdgeConv speed-up ({args.step}): {plain['seconds'] / fused['seconds']:.2f}x, "
          f"memory {plain['peak_bytes'] / max(fused['peak_bytes'], 1):.2f}x lower")


if __name__ == "__main__":
    main()
