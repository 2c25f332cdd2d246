"""Binary layers for PointNet: a shared-MLP / linear layer with a quantizer by name."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pointdistill.binary.quantizers import Quantizer, create_quantizer


class BinaryLinear(nn.Module):
    """y = q.output_scale(q.activation(x) @ q.weight(W)^T), no bias (BatchNorm follows),
    computed as the exact product of the +-1 patterns times the magnitudes.

    x: [B, in] (a linear layer) or [B, N, in] (a shared MLP over N points, features last: one
    matmul over the B * N rows, no 1x1-convolution reorders); y has x's leading dimensions.
    The latent weight W [out, in] stays float for training; only its binarised form is used.
    """

    def __init__(self, in_features: int, out_features: int, quantizer: str | Quantizer):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.quantizer = create_quantizer(quantizer) if isinstance(quantizer, str) else quantizer
        self.initialize_on_next_forward = False

    def _initialize_if_asked(self, x: torch.Tensor) -> None:
        if self.initialize_on_next_forward:
            self.quantizer.initialize_scale(x.detach(), self.weight.detach())
            self.initialize_on_next_forward = False

    def quantized_operands(self, x: torch.Tensor, x_is_hardtanh_output: bool = False) -> tuple[
            torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """For a caller that forms the product itself (the fused point layers): the activation's
        pattern source shaped like x (its signs are the +-1 pattern, its gradient the pattern's),
        weight(W) [out, in], and the magnitudes, per sample [B] and per row [out] (None: 1). The
        source is the quantizer's hardtanh_pattern_source(x) where ``x_is_hardtanh_output``
        (|x| <= 1: x itself under the clipped straight-through estimator), else its sign_source(x)."""
        self._initialize_if_asked(x)
        source = (self.quantizer.hardtanh_pattern_source(x) if x_is_hardtanh_output
                  else self.quantizer.sign_source(x))
        x_scale = self.quantizer.activation_magnitude(x)
        w_sign, w_scale = self.quantizer.weight_factors(self.weight)
        w_q = w_sign if w_scale is None else w_sign * w_scale
        return (source, w_q, None if x_scale is None else x_scale.reshape(-1),
                None if w_scale is None else w_scale.reshape(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._initialize_if_asked(x)
        x_sign, x_scale = self.quantizer.activation_factors(x)
        w_sign, w_scale = self.quantizer.weight_factors(self.weight)
        y = F.linear(x_sign, w_sign)
        y = y if w_scale is None else y * w_scale.reshape(-1)  # per output channel, the last axis
        y = y if x_scale is None else y * x_scale  # per sample: [B, 1] or [B, 1, 1]
        return self.quantizer.output_scale(y)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, quantizer={self.quantizer.name}"


def binary_layers(model: nn.Module) -> list[BinaryLinear]:
    return [m for m in model.modules() if isinstance(m, BinaryLinear)]


@torch.no_grad()
def binary_weight_signs(model: nn.Module) -> torch.Tensor:
    """Every binary layer's weight pattern as the forward uses it (the quantizer's +-1 of the
    latent weight), flattened and concatenated: bool [total binary weights], True for +1."""
    patterns = [layer.quantizer.weight_factors(layer.weight)[0].reshape(-1) > 0 for layer in binary_layers(model)]
    return torch.cat(patterns) if patterns else torch.zeros(0, dtype=torch.bool)


def flipped_share(before: torch.Tensor, after: torch.Tensor) -> float:
    """The share of binary weights whose sign differs between two ``binary_weight_signs`` of one
    model (larq's flip ratio over the interval): 0 once training has frozen every sign; NaN for
    a model without binary layers."""
    return int((before != after).sum()) / before.numel() if before.numel() else math.nan


@torch.no_grad()
def initialize_binary_scales(model: nn.Module, *inputs: torch.Tensor) -> None:
    """Run one forward pass on a first training batch so every quantizer with a data-dependent
    scale (LSR) initialises it from its actual input. Call before building the optimizer;
    BatchNorm running statistics are left as they were."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [[b.clone() for b in norm.buffers()] for norm in norms]
    for layer in binary_layers(model):
        layer.initialize_on_next_forward = True
    was_training = model.training
    model.train()
    model(*inputs)
    model.train(was_training)
    for norm, buffers in zip(norms, saved):
        for buffer, value in zip(norm.buffers(), buffers):
            buffer.copy_(value)


def set_training_progress(model: nn.Module, epoch: int, total_epochs: int) -> None:
    """Tell every quantizer the epoch (0-based) of ``total_epochs`` (IR-Net's EDE schedule)."""
    for layer in binary_layers(model):
        layer.quantizer.set_progress(epoch, total_epochs)
