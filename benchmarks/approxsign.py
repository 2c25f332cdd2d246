"""Bi-Real's ApproxSign backward: the quantizer's (four in-place passes) against its definition
written out (torch.where over the two slopes, times the |x| < 1 mask: about ten passes).

    python benchmarks/approxsign.py [--rounds 7]

On the activations of a ModelNet40 student's binary point layers (batch 32, 1024 points, 64 and 128
channels, float32, uniform in [-1.5, 1.5]), both in this process on the same tensors, the rounds
alternating; the median round counts. Prints per shape the milliseconds of each and the ratio
definition / quantizer; the gradients are checked equal bit for bit first.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pointdistill.binary import create_quantizer


def by_definition(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    slope = torch.where(x < 0, 2 + 2 * x, 2 - 2 * x) * (x.abs() < 1).to(grad.dtype)
    return grad * slope


def by_quantizer(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    leaf = x.detach().requires_grad_()
    create_quantizer("bireal").activation_pattern(leaf).backward(grad)
    return leaf.grad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for channels in (64, 128):
        x = torch.rand(32, 1024, channels, generator=generator) * 3 - 1.5
        grad = torch.randn(32, 1024, channels, generator=generator)
        assert torch.equal(by_definition(x, grad), by_quantizer(x, grad))
        times = {"definition": [], "quantizer": []}
        for _ in range(args.rounds):
            for name, backward in (("definition", by_definition), ("quantizer", by_quantizer)):
                started = time.perf_counter()
                backward(x, grad)
                times[name].append(time.perf_counter() - started)
        ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
        print(f"[32, 1024, {channels}]: definition {ms['definition']:.2f} ms, quantizer {ms['quantizer']:.2f} ms "
              f"(the quantizer's forward sign included), ratio {ms['definition'] / ms['quantizer']:.2f}x")


if __name__ == "__main__":
    main()
