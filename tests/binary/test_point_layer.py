"""The fused binary point layer (binary linear -> BatchNorm -> Hardtanh) against the same
three modules in autograd: output, every gradient and the BatchNorm buffers, on every popcount
path, with per-cloud and per-channel magnitudes (XNOR), an output scale (LSR), constant channels
and a fallback for inputs wider than a byte can count."""

import copy
import logging

import pytest
import torch
from torch import nn

from pointdistill.binary.point_layer import point_layer
from pointdistill.binary.popcount import available_paths
from pointdistill.binary.quantizers import sign


def _operands(batch=5, points=53, k=70, channels=45, seed=0, xnor=False):
    """The +-1 activation pattern and the weight (times magnitudes for XNOR), with gradients,
    K = 70 (two words, padded) and 45 channels (two groups of 32, padded); points 0 and 1 repeat
    so that products tie. The activation is the pattern times the per-cloud magnitude."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, points, k, generator=generator).sign()
    a[:, 1] = a[:, 0]
    w = torch.randn(channels, k, generator=generator).sign()
    a_scale = w_scale = None
    if xnor:
        a_scale = torch.rand(batch, generator=generator) + 0.5
        w_scale = torch.rand(channels, generator=generator) + 0.5
        w = w * w_scale[:, None]
    return a.requires_grad_(), w.requires_grad_(), a_scale, w_scale


def _bn(channels, seed=1):
    torch.manual_seed(seed)
    bn = nn.BatchNorm1d(channels)
    with torch.no_grad():
        bn.weight.uniform_(-1.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


def _reference(a, w, scale, bn, a_scale=None):
    """Autograd: the activation a * a_scale[b] (a the +-1 pattern, or a Hardtanh output whose
    sign is taken with the identity as its gradient, the clipped STE on |a| <= 1)."""
    pattern = a + (sign(a) - a).detach()
    y = (pattern if a_scale is None else pattern * a_scale[:, None, None]) @ w.T
    y = y if scale is None else y * scale
    return torch.nn.functional.hardtanh(bn(y.reshape(-1, y.shape[-1])).reshape(y.shape))


def _compare(a, w, a_scale, w_scale, scale, bn, path, monkeypatch):
    monkeypatch.setenv("POINTDISTILL_TRAIN_KERNEL", path)
    weights = torch.randn(a.shape[0], a.shape[1], w.shape[0], generator=torch.Generator().manual_seed(5))
    results = []
    for fused in (False, True):
        leaves = [t.detach().clone().requires_grad_() for t in (a, w)]
        norm = copy.deepcopy(bn)
        out = (point_layer(*leaves, scale, norm, (a_scale, w_scale)) if fused
               else _reference(*leaves, scale, norm, a_scale))
        (out * weights).sum().backward()
        grads = [leaves[0].grad, leaves[1].grad, norm.weight.grad, norm.bias.grad]
        results.append((out.detach(), grads, [norm.running_mean, norm.running_var, norm.num_batches_tracked]))
    (ref_out, ref_grads, ref_buffers), (out, grads, buffers) = results
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    for name, got, want in zip(["a", "weight", "gamma", "beta"], grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item() + 1e-7, msg=name)
    for got, want in zip(buffers, ref_buffers):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", available_paths())
@pytest.mark.parametrize("xnor", [False, True])
def test_fused_layer_matches_autograd(path, xnor, monkeypatch):
    a, w, a_scale, w_scale = _operands(xnor=xnor)
    _compare(a, w, a_scale, w_scale, None, _bn(w.shape[0]), path, monkeypatch)


@pytest.mark.parametrize("path", available_paths())
def test_a_hardtanh_output_is_its_own_pattern_source(path, monkeypatch):
    """The fused layer takes the previous Hardtanh's output x: its signs (sign(0) = +1, -0
    included) are the pattern, and x gets the pattern's gradient (the clipped STE on |x| <= 1)."""
    a, w, a_scale, w_scale = _operands(xnor=True)
    x = a.detach() * torch.rand(a.shape, generator=torch.Generator().manual_seed(4))  # same signs, |x| <= 1
    x[0, 3, :4] = torch.tensor([0.0, -0.0, 1.0, -1.0])
    _compare(x.requires_grad_(), w, a_scale, w_scale, None, _bn(w.shape[0]), path, monkeypatch)


@pytest.mark.parametrize("path", available_paths())
def test_output_scale_where_eps_matters(path, monkeypatch):
    """LSR's (constant) scale reaches the output only through BatchNorm's eps; with eps = 0.5 it
    changes the output and the other gradients visibly, and both paths must agree."""
    a, w, _, _ = _operands(seed=2)
    bn = _bn(w.shape[0])
    bn.eps = 0.5
    _compare(a, w, None, None, torch.tensor(0.8), bn, path, monkeypatch)


@pytest.mark.parametrize("path", available_paths())
def test_a_point_at_the_batch_mean_gets_exactly_beta(path, monkeypatch):
    """Where the product is the same at every point (here every point of every cloud is one
    point), BatchNorm's exact output is beta. The fused layer gives exactly beta (so the next
    layer's sign is +1 where beta = 0, by sign(0) = +1); torch's x * alpha + (beta - mean * alpha)
    is within float32 rounding of it, times 1 / sqrt(eps) = 316 (the variance is 0)."""
    a, w, _, _ = _operands(seed=3)
    a = a.detach()[:1, :1].expand_as(a).contiguous().requires_grad_()
    bn = _bn(w.shape[0])
    with torch.no_grad():
        bn.bias[::2] = 0.0
    monkeypatch.setenv("POINTDISTILL_TRAIN_KERNEL", path)
    out = point_layer(a.detach(), w.detach(), None, copy.deepcopy(bn), (None, None))
    assert torch.equal(out, torch.nn.functional.hardtanh(bn.bias.detach()).expand_as(out))
    torch.testing.assert_close(out, _reference(a.detach(), w.detach(), None, copy.deepcopy(bn)), rtol=0, atol=1e-3)


@pytest.mark.skipif(not {"avx512", "avx2"} <= set(available_paths()), reason="needs both vector paths")
def test_the_vector_paths_give_the_same_floats(monkeypatch):
    """AVX-512 and AVX2 take the input and weight gradients tile by tile with fused multiply-adds in
    the same order: the same floats, bit for bit, on every output (so a run does not depend on
    which of the two the machine has)."""
    a, w, a_scale, w_scale = _operands(xnor=True, points=75)
    results = []
    for path in ("avx512", "avx2"):
        monkeypatch.setenv("POINTDISTILL_TRAIN_KERNEL", path)
        leaves = [t.detach().clone().requires_grad_() for t in (a, w)]
        norm = _bn(w.shape[0])
        out = point_layer(*leaves, None, norm, (a_scale, w_scale))
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append([out, leaves[0].grad, leaves[1].grad, norm.weight.grad, norm.bias.grad])
    for name, x, y in zip(["out", "a", "weight", "gamma", "beta"], *results):
        assert torch.equal(x, y), name


def test_student_with_wide_point_layers_falls_back_and_says_so(caplog):
    """Binary inputs wider than 255 channels do not fit the byte popcounts: the reference path
    runs (same gradients by definition) and the log says why, once."""
    from pointdistill.distill import student_spec
    from pointdistill.models import create_model

    teacher = {"name": "pointnet", "num_classes": 4, "point_widths": [8, 300, 16], "head_widths": [8],
               "dropout": 0.0, "input_transform": False, "feature_transform": False}
    model = create_model(student_spec(teacher, "bnn", "ema"))
    model.training_kernel = "fast"
    model.train()
    with caplog.at_level(logging.WARNING, logger="pointdistill.binary.popcount"):
        model(torch.randn(3, 20, 3)).logits.sum().backward()
    assert "300 > 255 inputs" in caplog.text
