"""Bi-Real's ApproxSign on CPU: its backward, and a fused point layer's step fed through it.

    python benchmarks/approxsign.py [--rounds 7]

1. The backward: the quantizer's (four in-place passes) against its definition written out
   (torch.where over the two slopes, times the |x| < 1 mask: about ten passes), on activations
   uniform in [-1.5, 1.5].
2. A fused binary point layer's training step (forward and backward, BatchNorm and Hardtanh
   included) on a Hardtanh output: fed the +-1 pattern (a sign pass forward, ApproxSign's backward)
   against fed the Hardtanh output itself (``hardtanh_pattern_source``: no sign pass, the same
   backward, no +-1 tensor), as a bireal student's trunk runs.

Shapes of a ModelNet40 student's binary point layers (batch 32, 1024 points, 64 and 128 input
channels, float32), both variants in this process on the same tensors, the rounds alternating; the
median round counts. Prints per shape the milliseconds of each and their ratio; the gradients are
checked equal bit for bit first.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
from torch import nn

from pointdistill.binary import create_quantizer
from pointdistill.binary.point_layer import point_layer


def by_definition(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    slope = torch.where(x < 0, 2 + 2 * x, 2 - 2 * x) * (x.abs() < 1).to(grad.dtype)
    return grad * slope


def by_quantizer(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    leaf = x.detach().requires_grad_()
    create_quantizer("bireal").activation_pattern(leaf).backward(grad)
    return leaf.grad


def layer_step(quantizer, source: str, x: torch.Tensor, latent: torch.Tensor, bn: nn.BatchNorm1d,
               grad: torch.Tensor):
    """One fused point layer's forward and backward, fed ``quantizer.<source>(x)``: the gradients
    of x and of the latent weight."""
    leaf, w = x.detach().requires_grad_(), latent.detach().requires_grad_()
    signs, magnitude = quantizer.weight_factors(w)
    fed = getattr(quantizer, source)(leaf)
    point_layer(fed, signs * magnitude, None, bn, (None, magnitude.reshape(-1))).backward(grad)
    return leaf.grad, w.grad


def median_ms(variants: dict, rounds: int) -> dict[str, float]:
    """The median milliseconds of each zero-argument callable, the rounds alternating."""
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("1. ApproxSign's backward")
    for channels in (64, 128):
        x = torch.rand(32, 1024, channels, generator=generator) * 3 - 1.5
        grad = torch.randn(32, 1024, channels, generator=generator)
        assert torch.equal(by_definition(x, grad), by_quantizer(x, grad))
        ms = median_ms({"definition": lambda: by_definition(x, grad), "quantizer": lambda: by_quantizer(x, grad)},
                       args.rounds)
        print(f"[32, 1024, {channels}]: definition {ms['definition']:.2f} ms, quantizer {ms['quantizer']:.2f} ms "
              f"(the quantizer's forward sign included), ratio {ms['definition'] / ms['quantizer']:.2f}x")
    print("2. a fused point layer's step on a Hardtanh output, 64 output channels")
    quantizer = create_quantizer("bireal")
    for channels in (64, 128):
        x = torch.rand(32, 1024, channels, generator=generator) * 2 - 1
        latent = torch.randn(64, channels, generator=generator)
        grad = torch.randn(32, 1024, 64, generator=generator)
        bn = nn.BatchNorm1d(64)
        variants = {source: functools.partial(layer_step, quantizer, source, x, latent, bn, grad)
                    for source in ("activation_pattern", "hardtanh_pattern_source")}
        a, b = (run() for run in variants.values())
        assert all(torch.equal(u, v) for u, v in zip(a, b))
        ms = median_ms(variants, args.rounds)
        pattern, hardtanh = ms["activation_pattern"], ms["hardtanh_pattern_source"]
        print(f"[32, 1024, {channels}] -> 64: from the pattern {pattern:.2f} ms, from the Hardtanh output "
              f"{hardtanh:.2f} ms, ratio {pattern / hardtanh:.2f}x")


if __name__ == "__main__":
    main()
