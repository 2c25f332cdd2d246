"""Shared MLPs on point features kept features last, [B, N, C]: each 1x1 convolution is one
matmul over the B * N points and BatchNorm reads the same memory as [B * N, C], so no layer
reorders the features (the modules and their state dicts stay those of a Conv1d network)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from pointdistill.binary.float_layer import activation_bounds, float_point_layer
from pointdistill.binary.popcount import fused_path_applies


def per_point(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module`` on point features x [B, N, C]: a kernel-1 Conv1d as a linear map, BatchNorm1d
    over the B * N rows, anything else (activations, BinaryLinear) as it is."""
    if isinstance(module, nn.Conv1d):
        if module.kernel_size != (1,):
            raise ValueError(f"per-point layers are 1x1 convolutions, got kernel {module.kernel_size}")
        # x @ (W^T, contiguous) rather than F.linear: autograd then forms the weight gradient as
        # x^T @ grad, [K, B N] x [B N, C], which MKL runs 10x faster than grad^T @ x when K is 3
        # (the stem); a transposed view would make it follow the view's strides back to the slow form
        y = x @ module.weight[:, :, 0].T.contiguous()
        return y if module.bias is None else y + module.bias
    if isinstance(module, nn.BatchNorm1d):
        return module(x.reshape(-1, x.shape[-1])).reshape(x.shape)
    return module(x)


def per_point_layers(modules: Iterable[nn.Module], x: torch.Tensor, kernel: str = "reference") -> torch.Tensor:
    """``modules`` in turn on point features x [B, N, C]. With ``kernel="fast"``, each bias-free
    1x1 Conv1d -> BatchNorm1d -> ReLU / Hardtanh runs as one fused layer on the CPU
    (pointdistill.binary.float_layer) where fused_path_applies; everything else as it is."""
    modules = list(modules)
    i = 0
    while i < len(modules):
        bounds = _fused_layer_bounds(modules[i:i + 3], x, kernel)
        if bounds is not None:
            conv, bn, _ = modules[i:i + 3]
            x = float_point_layer(x, conv.weight[:, :, 0], bn, bounds)
            i += 3
        else:
            x = per_point(modules[i], x)
            i += 1
    return x


def _fused_layer_bounds(layers: list[nn.Module], x: torch.Tensor, kernel: str) -> tuple[float, float] | None:
    """The activation's bounds where ``layers`` are a bias-free 1x1 Conv1d, a BatchNorm1d and a
    ReLU / Hardtanh that the fused float layer runs for x, else None."""
    if kernel != "fast" or len(layers) < 3:
        return None
    conv, bn, activation = layers
    if not (isinstance(conv, nn.Conv1d) and conv.kernel_size == (1,) and conv.bias is None
            and isinstance(bn, nn.BatchNorm1d)):
        return None
    bounds = activation_bounds(activation)
    return bounds if bounds is not None and fused_path_applies(kernel, x, bn, binary=False) else None
