"""Binarisation methods, each with its forward and straight-through backward in one place.

Conventions (stated once): ``sign(0) = +1``; every binary layer computes
``y = output_scale(activation(x) @ weight(W)^T)``. A quantizer instance belongs to one layer,
so per-layer state (LSR's output scale, IR-Net's training progress) lives in it.
Formulas: ../shared/REFERENCE.md section 1.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch
from torch import nn

from pointdistill.choices import QUANTIZER_NAMES, check_declared

QUANTIZERS: dict[str, type["Quantizer"]] = {}


def register_quantizer(name: str):
    check_declared("quantizer", name, QUANTIZER_NAMES)

    def decorate(cls):
        if name in QUANTIZERS:
            raise ValueError(f"quantizer {name!r} registered twice")
        cls.name = name
        QUANTIZERS[name] = cls
        return cls

    return decorate


def create_quantizer(name: str) -> "Quantizer":
    if name not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {name!r}; registered: {sorted(QUANTIZERS)}")
    return QUANTIZERS[name]()


def sign(x: torch.Tensor) -> torch.Tensor:
    """+1 where x >= 0, else -1 (sign(0) = sign(-0) = +1), in x's dtype (one cheap pass: the
    sign bit of x + 0, which turns -0 into +0, copied onto ones)."""
    return torch.ones_like(x).copysign_(x + 0.0)


@functools.lru_cache(maxsize=8)
def _unit_bounds(dtype: torch.dtype) -> tuple[float, float]:
    """The neighbours of -1 and +1 outside [-1, 1] in ``dtype``."""
    one = torch.ones((), dtype=dtype)
    return torch.nextafter(-one, -2 * one).item(), torch.nextafter(one, 2 * one).item()


def clip_gradient(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """grad * 1[|x| <= 1], as one fused pass (Hardtanh's backward with its open bounds moved
    one step outwards, so that x = +-1 keeps its gradient)."""
    low, high = _unit_bounds(x.dtype)
    return torch.ops.aten.hardtanh_backward(grad, x, low, high)


def ede_gradient(grad: torch.Tensor, x: torch.Tensor, t: float, k: float) -> torch.Tensor:
    """IR-Net's error decay estimator: k * t * (1 - tanh^2(t x)) * grad."""
    return k * t * (1 - torch.tanh(t * x) ** 2) * grad


def approx_sign_gradient(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bi-Real's ApproxSign: (2 + 2x) on [-1, 0), (2 - 2x) on [0, 1), 0 elsewhere, times grad,
    as grad * max(2 - 2|x|, 0) (2 - 2|x| = 2 + 2x exactly for x < 0): four in-place passes over
    one buffer instead of about ten."""
    return x.abs().mul_(-2).add_(2).clamp_(min=0).mul_(grad)


class _Sign(torch.autograd.Function):
    """Forward sign(x); backward gradient(grad, x), the method's straight-through estimator."""

    @staticmethod
    def forward(ctx, x, gradient: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        ctx.save_for_backward(x)
        ctx.gradient = gradient
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return ctx.gradient(grad, x), None


class _SignSource(_Sign):
    """Forward x itself (a view: no pass) for a layer that reads only its signs; backward as
    _Sign's: the same gradient, bit for bit, without the +-1 tensor."""

    @staticmethod
    def forward(ctx, x, gradient: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        ctx.save_for_backward(x)
        ctx.gradient = gradient
        return x.view_as(x)


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    return _Sign.apply(x, clip_gradient)


def _features_axes(x: torch.Tensor) -> tuple[int, ...]:
    """All axes but the batch: (1,) for [B, C], (1, 2) for [B, N, C]."""
    return tuple(range(1, x.ndim))


class Quantizer(nn.Module):
    """Base: subclasses override ``weight_factors``, ``activation_gradient`` (default: the clipped
    straight-through estimator) and, where activations carry a magnitude, ``activation_magnitude``.

    A binary operand is a +-1 pattern (with the method's straight-through gradient) times an
    optional detached magnitude: one per weight row, one per activation sample. Layers multiply
    the +-1 patterns (an exact integer product) and apply the magnitudes after, so equal integer
    products stay exactly equal (ties in a max are real ties, not rounding)."""

    name = "base"

    def weight_factors(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(+-1 pattern [out, in], magnitude per row [out, 1] or None) of the latent weight."""
        raise NotImplementedError

    def activation_gradient(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The method's straight-through gradient of sign(a): (grad, a) -> grad wrt a."""
        return clip_gradient

    def activation_pattern(self, x: torch.Tensor) -> torch.Tensor:
        """The +-1 pattern of x ([B, C] or [B, N, C]), with the method's straight-through gradient."""
        return _Sign.apply(x, self.activation_gradient())

    def sign_source(self, x: torch.Tensor) -> torch.Tensor:
        """For the fused point layers, which read only the signs of their input: x itself (no +-1
        tensor made) with activation_pattern(x)'s straight-through gradient, bit for bit."""
        return _SignSource.apply(x, self.activation_gradient())

    def hardtanh_pattern_source(self, x: torch.Tensor) -> torch.Tensor:
        """sign_source(x) for x a Hardtanh output (|x| <= 1), where a method may need less."""
        return self.sign_source(x)

    def activation_magnitude(self, x: torch.Tensor) -> torch.Tensor | None:
        """The detached magnitude per sample, [B, 1] or [B, 1, 1], or None (1)."""
        return None

    def activation_factors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(activation_pattern(x), activation_magnitude(x))."""
        return self.activation_pattern(x), self.activation_magnitude(x)

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        """Binary(-valued, maybe scaled) weight [out, in] from the latent float weight."""
        pattern, magnitude = self.weight_factors(w)
        return pattern if magnitude is None else pattern * magnitude

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        """Binary(-valued, maybe scaled) input, x [B, C] or [B, C, N]."""
        pattern, magnitude = self.activation_factors(x)
        return pattern if magnitude is None else pattern * magnitude

    def output_factor(self) -> torch.Tensor | None:
        """The 0-d scale the layer's output is multiplied by (LSR's, a constant), or None."""
        return None

    def output_scale(self, y: torch.Tensor) -> torch.Tensor:
        factor = self.output_factor()
        return y if factor is None else y * factor

    def set_progress(self, epoch: int, total_epochs: int) -> None:
        """Called at the start of every training epoch (0-based)."""

    def initialize_scale(self, x: torch.Tensor, w: torch.Tensor) -> None:
        """Called once on the first training batch, before the optimizer is built."""


class ClippedSignActivations(Quantizer):
    """Activations sign(a) under the clipped straight-through estimator, grad * 1[|a| <= 1]: the
    identity on a Hardtanh output, so the fused layers take the Hardtanh output itself."""

    def hardtanh_pattern_source(self, x):
        return x


@register_quantizer("bnn")
class BNN(ClippedSignActivations):
    """sign(W), sign(a); clipped STE."""

    def weight_factors(self, w):
        return sign_ste(w), None


@register_quantizer("xnor")
class XNOR(ClippedSignActivations):
    """sign(W - rowmean W) * mean|W_row| ; sign(a) * mean|a| per sample (scales detached); clipped STE."""

    def weight_factors(self, w):
        return sign_ste(w - w.mean(dim=1, keepdim=True)), w.abs().mean(dim=1, keepdim=True).detach()

    def activation_magnitude(self, x):
        return x.abs().mean(dim=_features_axes(x), keepdim=True).detach()


@register_quantizer("irnet")
class IRNet(Quantizer):
    """sign(standardised row) * 2^round(log2 mean|W_std|) ; sign(a); EDE backward with
    t = 10^(-3 + 4 e / E), k = max(1/t, 1), following the training progress."""

    def __init__(self):
        super().__init__()
        self.t, self.k = 0.001, 1000.0
        self.set_progress(0, 1)

    def set_progress(self, epoch: int, total_epochs: int) -> None:
        self.t = 10 ** (-3 + 4 * epoch / total_epochs)
        self.k = max(1 / self.t, 1.0)

    def activation_gradient(self):
        return functools.partial(ede_gradient, t=self.t, k=self.k)

    def weight_factors(self, w):
        standardised = (w - w.mean(dim=1, keepdim=True)) / w.std(dim=1, keepdim=True).clamp_min(1e-12)
        scale = torch.pow(2.0, torch.round(torch.log2(standardised.abs().mean(dim=1, keepdim=True))))
        return _Sign.apply(standardised, self.activation_gradient()), scale.detach()


@register_quantizer("lsr")
class LSR(ClippedSignActivations):
    """BiPointNet's layer-wise scale recovery: sign(W - mean W) (one global mean), sign(a),
    output times one scalar alpha per layer, initialised from the first batch as
    std(a @ Wc^T) / std(sign(a) @ sign(Wc)^T) (fallback std(Wc) / std(sign(Wc))).

    alpha is a buffer, fixed after initialisation (ours; the paper calls it learnable). A
    BatchNorm follows every binary layer, and a training-mode BatchNorm cancels any scale in
    front of it but for its eps, so alpha's true gradient is about eps / var times smaller than
    the rest and its autograd gradient is float32 cancellation noise. Adam turns that noise into
    steps of about the learning rate: on ModelNet40 a trained alpha crossed zero at epoch 37,
    BatchNorm flipped the sign of the layer's every channel and the run lost 20 points.
    BiPointNet's released layer re-creates its scale as a new Parameter on the first forward,
    after a training script has built its optimizer, so there too it is never stepped."""

    def __init__(self):
        super().__init__()
        self.register_buffer("alpha", torch.ones(()))

    def weight_factors(self, w):
        return sign_ste(w - w.mean()), None

    def output_factor(self):
        return self.alpha

    @torch.no_grad()
    def initialize_scale(self, x: torch.Tensor, w: torch.Tensor) -> None:
        centred = w - w.mean()
        rows = x.reshape(-1, x.shape[-1])  # [M, in]: every point (or sample) a row
        alpha = (rows @ centred.T).std() / (sign(rows) @ sign(centred).T).std()
        if not math.isfinite(alpha.item()):
            alpha = centred.std() / sign(centred).std()
        self.alpha.fill_(alpha.item())


@register_quantizer("bireal")
class BiReal(Quantizer):
    """mean|W_row| * sign(W) (clipped STE on W) ; sign(a) with the ApproxSign backward."""

    def weight_factors(self, w):
        return sign_ste(w), w.abs().mean(dim=1, keepdim=True).detach()

    def activation_gradient(self):
        return approx_sign_gradient
