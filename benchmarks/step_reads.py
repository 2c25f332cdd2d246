"""What reading the loss on the host every step costs a student's training steps.

    python benchmarks/step_reads.py --device cuda [--steps 100] [--rounds 5] [--num-points 1024]

The released student's step (Bi-Real 1-bit PointNet with point and head shortcuts, ModelNet40
widths, batch 32; CE + KD + matrix-1 against random teacher outputs; Adam; on CUDA the forward in
bfloat16 autocast, as train-student runs it), timed over ``--steps`` consecutive steps two ways
that leave the training itself the same:

- ``read every step``: each step reads every loss term, the finiteness check and the number of
  correct predictions on the host (what train-student did before pointdistill.epoch_totals), so
  the host waits for the GPU before it queues the next step;
- ``summed on device``: the steps add into EpochTotals and the host reads once, after the last.

Rounds alternate the two so that both see the same machine; the best round counts. Prints
seconds per step of each and the ratio (read every step / summed on device). On the CPU a read
is free and the ratio is about 1.
"""

from __future__ import annotations

import argparse
import time

import torch

POINT_WIDTHS, HEAD_WIDTHS, CLASSES = (64, 64, 64, 128, 1024), (512, 256), 40


def build(device: torch.device, batch: int, num_points: int):
    """(step, loss config, batch tensors): one training step of the student on fixed random data."""
    from pointdistill.binary import initialize_binary_scales
    from pointdistill.distill import student_spec
    from pointdistill.losses import LossConfig, LossTargets, total_loss
    from pointdistill.models import PointNetConfig, create_model, model_spec
    from pointdistill.optimizer import adam

    torch.manual_seed(0)
    teacher = model_spec("pointnet", PointNetConfig(CLASSES, POINT_WIDTHS, HEAD_WIDTHS))
    model = create_model(student_spec(teacher, "bireal", "ema", shortcuts=True, head_shortcuts=True)).to(device)
    points = torch.randn(batch, num_points, 3, device=device)
    labels = torch.randint(0, CLASSES, (batch,), device=device)
    targets = LossTargets(labels, torch.randn(batch, CLASSES, device=device),
                          torch.randn(batch, POINT_WIDTHS[-1], device=device))
    loss = LossConfig(kd_weight=0.5, reg_weight=0.01)
    initialize_binary_scales(model, points)
    model.train()
    optimizer = adam(model.parameters(), lr=1e-3)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))

    def step():
        with autocast:
            out = model(points)
        total, terms = total_loss(loss, out.logits, out.pooled, targets)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        return total, terms, out.logits

    return step, loss, labels


def timed(mode: str, step, loss, labels, steps: int, device: torch.device) -> float:
    """Seconds per step over ``steps`` steps in ``mode``, up to the host holding every number."""
    from pointdistill.epoch_totals import EpochTotals

    totals = EpochTotals(device, loss.term_names)
    sums: dict[str, float] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for index in range(1, steps + 1):
        total, terms, logits = step()
        if mode == "read every step":
            assert bool(torch.isfinite(total))
            for name, value in {**terms, "total": total.detach()}.items():
                sums[name] = sums.get(name, 0.0) + float(value) * len(labels)
            sums["correct"] = sums.get("correct", 0) + int((logits.argmax(1) == labels).sum())
        else:
            totals.add(index, total, terms, logits, labels)
    if mode != "read every step":
        totals.raise_if_diverged(1, 1, steps)
        totals.means()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=100, help="consecutive steps per timing")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per mode")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--num-points", type=int, default=1024)
    args = parser.parse_args()
    device = torch.device(args.device)
    step, loss, labels = build(device, args.batch, args.num_points)
    modes = ("read every step", "summed on device")
    for mode in modes:  # warm-up: kernels, autotuning, allocator
        timed(mode, step, loss, labels, 3, device)
    best = {mode: float("inf") for mode in modes}
    for _ in range(args.rounds):
        for mode in modes:
            best[mode] = min(best[mode], timed(mode, step, loss, labels, args.steps, device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, batch {args.batch} x {args.num_points} points, {args.steps} steps, "
          f"best of {args.rounds} rounds")
    for mode in modes:
        print(f"{mode:<18} {1000 * best[mode]:8.2f} ms/step")
    print(f"ratio read every step / summed on device: {best[modes[0]] / best[modes[1]]:.2f}")


if __name__ == "__main__":
    main()
