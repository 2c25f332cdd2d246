"""Train a float teacher on the lent GPU within a wall-clock budget (the device tool gives a session
15 minutes, so the epoch count comes from a measurement, not a guess).

    python3 .ci/device_teacher.py BUDGET_S DATASET OUT [--model dgcnn] [--device cuda] [--num-points 1024]

Times 30 training steps of the real model at batch 32 (after 10 warm-up steps), then runs the
library's teacher job -- what `pointdistill train-teacher --model M --epochs E --eval-every E` runs,
without Prefect, which the device machine lacks -- with the most epochs E (cosine over E) whose
estimate fits 90 % of what is left of the budget. Prints the plan and the summary as JSON lines."""

import argparse
import json
import logging
import math
import sys
import time

import torch
import torch.nn.functional as F

from pointdistill.data import load_dataset
from pointdistill.models import create_model
from pointdistill.models.teacher_options import TeacherOptions, teacher_spec
from pointdistill.train import TeacherJob, TrainConfig, run_teacher_job

BATCH = 32
FINAL_S = 40  # the final test pass, the files, margin


def seconds_per_step(spec: dict, points: torch.Tensor, labels: torch.Tensor, device: str) -> float:
    """Seconds of one training step (forward, CE, backward, Adam, the loop's host reads) of a fresh model."""
    torch.manual_seed(0)
    model = create_model(spec).to(device)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    points, labels = points.to(device), labels.to(device)

    def step():
        logits = model(points).logits
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
        (logits.argmax(1) == labels).sum().item()

    for _ in range(10):
        step()
    started = time.time()
    for _ in range(30):
        step()
    return (time.time() - started) / 30


def main() -> None:
    started = time.time()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("budget_s", type=float)
    parser.add_argument("dataset")
    parser.add_argument("out")
    parser.add_argument("--model", default="dgcnn")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--num-points", type=int, default=1024)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s %(message)s")
    train_set = load_dataset(args.dataset, "train", args.num_points)
    spec = teacher_spec(args.model, train_set.num_classes, TeacherOptions())
    step_s = seconds_per_step(spec, torch.from_numpy(train_set.points[:BATCH]),
                              torch.from_numpy(train_set.labels[:BATCH]), args.device)
    epoch_s = math.ceil(len(train_set) / BATCH) * step_s * 1.15 + 1.0
    left_s = args.budget_s - (time.time() - started) - FINAL_S
    epochs = max(1, min(250, int(0.9 * left_s / epoch_s)))
    plan = {"model": args.model, "step_s": step_s, "estimated_epoch_s": epoch_s, "left_s": left_s, "epochs": epochs}
    print("plan", json.dumps(plan), flush=True)
    job = TeacherJob(dataset=args.dataset, out=args.out, model=args.model, num_points=args.num_points,
                     train=TrainConfig(epochs=epochs, device=args.device, eval_every=epochs))
    training_started = time.time()
    summary = run_teacher_job(job, progress=False)
    summary.pop("history", None)
    print("summary", json.dumps({**summary, "training_s": time.time() - training_started, "plan": plan}, default=str),
          flush=True)


if __name__ == "__main__":
    main()
