"""OpenMP's wait policy for CPU training, on an idle machine and on one shared with other jobs.

    python benchmarks/wait_policy.py [--load 2] [--rounds 4] [--threads 2]

The fused kernels run on torch's OpenMP threads, many short parallel regions a step. libgomp's
default lets a thread that waits at a region's end spin before it sleeps: the fastest on cores of
its own, but where other processes want the same cores a spinning thread holds one while the
thread it waits for is descheduled. OMP_WAIT_POLICY=PASSIVE makes waiting threads sleep at once.

Times one training step of the LSR+EMA student (ModelNet40 widths, 1024 points, batch 32,
generated clouds, fast kernels, forward and cross-entropy backward) with ``--threads`` threads:
each measurement a fresh process (the policy is read when libgomp starts), default and PASSIVE
alternating round by round, first with nothing else running, then beside ``--load`` busy
one-thread processes (float32 matrix products in a loop, as another training run would keep a
core busy). The median step of each process, then the median over rounds, count. Prints the
milliseconds of each and the ratio default / PASSIVE per load; start it on a machine with nothing
else running.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

STEP = """
import statistics, time, torch
from pointdistill.binary import initialize_binary_scales
from pointdistill.models import create_model
torch.manual_seed(0)
x, y = torch.randn(32, 1024, 3), torch.randint(0, 40, (32,))
model = create_model({"name": "binary_pointnet", "num_classes": 40, "point_widths": [64, 64, 64, 128, 1024],
                      "head_widths": [512, 256], "quantizer": "lsr", "aggregation": "ema"})
model.training_kernel = "fast"
model.train()
initialize_binary_scales(model, x)
def step():
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x).logits, y).backward()
step()
seconds = []
for _ in range(9):
    started = time.perf_counter()
    step()
    seconds.append(time.perf_counter() - started)
print(statistics.median(seconds))
"""

BUSY = """
import torch
torch.set_num_threads(1)
a = torch.randn(512, 512)
while True:
    a = torch.tanh(a @ a)
"""


def step_ms(threads: int, policy: str | None) -> float:
    """One process's median training step in ms, with OMP_WAIT_POLICY=policy (None: libgomp's default)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["OMP_NUM_THREADS"] = str(threads)
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", STEP], env=env, capture_output=True, text=True, check=True).stdout
    return 1e3 * float(out.strip().splitlines()[-1])


def compare(threads: int, rounds: int) -> dict[str, float]:
    times = {"default": [], "PASSIVE": []}
    for _ in range(rounds):
        times["default"].append(step_ms(threads, None))
        times["PASSIVE"].append(step_ms(threads, "PASSIVE"))
    return {policy: statistics.median(ms) for policy, ms in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load", type=int, default=2, help="busy one-thread processes beside the second comparison")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, {args.threads} training threads, {args.rounds} rounds")
    for load in (0, args.load):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        busy = [subprocess.Popen([sys.executable, "-c", BUSY], env=env) for _ in range(load)]
        try:
            ms = compare(args.threads, args.rounds)
        finally:
            for process in busy:
                process.kill()
                process.wait()
        print(f"beside {load} busy processes: default {ms['default']:.0f} ms, PASSIVE {ms['PASSIVE']:.0f} ms a step, "
              f"ratio default / PASSIVE {ms['default'] / ms['PASSIVE']:.2f}")


if __name__ == "__main__":
    main()
