"""The optimizer both training loops (train.py, distill.py) and the training benchmarks build."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def adam(parameters: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with PyTorch's fused kernel: one pass over each parameter, its gradient and its two
    moments instead of about six. On 2 CPU cores it steps the full-width binary PointNet student
    (0.82 M parameters in 23 tensors) in 0.65 ms against 4.0 ms for the per-parameter loop (a
    training step takes about 80 ms); results differ from that loop only in float32 rounding (the
    same seed still gives the same student). A checkpoint written by the per-parameter loop
    resumes with it: the saved groups keep their setting."""
    return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, fused=True)
