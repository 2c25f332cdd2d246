"""The fused float point layer (1x1 Conv1d -> BatchNorm -> ReLU / Hardtanh) against the same
three modules in autograd: output, every gradient and the BatchNorm buffers, on every kernel path,
on odd sizes, with a constant channel, without an input gradient (the layer on the coordinates),
and inside the fast PointNet teacher and binary student."""

import copy

import pytest
import torch
from torch import nn

from pointdistill.binary.float_layer import activation_bounds, float_point_layer
from pointdistill.binary.popcount import available_paths
from pointdistill.models.per_point import per_point_layers

ACTIVATIONS = {"relu": nn.ReLU(), "hardtanh": nn.Hardtanh()}


def _layer(k, channels, activation, seed=1):
    torch.manual_seed(seed)
    layers = nn.Sequential(nn.Conv1d(k, channels, 1, bias=False), nn.BatchNorm1d(channels), ACTIVATIONS[activation])
    with torch.no_grad():
        layers[1].weight.uniform_(-1.5, 1.5)
        layers[1].weight[0] = 0.0  # a dead channel: no gradient passes
        layers[1].bias.uniform_(-0.5, 0.5)
    return layers


def _inputs(batch=5, points=53, k=70, seed=0, offset=0.0):
    """x [B, N, K]: K = 70 (a tail of 6 columns past 64), 53 points (a tile of 32 and one of 21),
    channel 1 constant (its variance 0: BatchNorm's eps matters), an offset to test cancellation."""
    x = torch.randn(batch, points, k, generator=torch.Generator().manual_seed(seed)) + offset
    x[..., 1] = 0.25
    return x


def _compare(x, layers, path, monkeypatch, input_grad=True, atol=1e-5):
    monkeypatch.setenv("POINTDISTILL_TRAIN_KERNEL", path)
    results = []
    for kernel in ("reference", "fast"):
        model = copy.deepcopy(layers).train()
        leaf = x.detach().clone().requires_grad_(input_grad)
        out = per_point_layers(model, leaf, kernel)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
        (out * weights).sum().backward()
        conv, bn = model[0], model[1]
        grads = [leaf.grad, conv.weight.grad, bn.weight.grad, bn.bias.grad]
        results.append((out.detach(), grads, [bn.running_mean, bn.running_var, bn.num_batches_tracked]))
    (ref_out, ref_grads, ref_buffers), (out, grads, buffers) = results
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=atol)
    for name, got, want in zip(["x", "weight", "gamma", "beta"], grads, ref_grads):
        if want is None:
            assert got is None, name
            continue
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item() + 1e-7, msg=name)
    for got, want in zip(buffers, ref_buffers):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", available_paths())
@pytest.mark.parametrize("activation", ["relu", "hardtanh"])
def test_fused_float_layer_matches_autograd(path, activation, monkeypatch):
    _compare(_inputs(), _layer(70, 45, activation), path, monkeypatch)


@pytest.mark.parametrize("path", available_paths())
def test_the_layer_on_the_coordinates_takes_no_input_gradient(path, monkeypatch):
    """K = 3 (points in, no gradient wanted): the weight gradient alone, as autograd gives it."""
    _compare(_inputs(k=3), _layer(3, 64, "hardtanh"), path, monkeypatch, input_grad=False)


@pytest.mark.parametrize("path", available_paths())
def test_far_from_the_origin_it_is_as_exact_as_autograd(path, monkeypatch):
    """Inputs offset by 100: the product's mean is large against its spread, and the weight
    gradient dy^T x cancels (dy sums to 0 per channel). Against float64 autograd, the fused layer
    (shifted sums for the statistics) is no further off than float32 autograd, in every output."""
    monkeypatch.setenv("POINTDISTILL_TRAIN_KERNEL", path)
    x, layers = _inputs(offset=100.0, k=8), _layer(8, 16, "relu")
    results = {}
    for kernel, dtype in (("reference", torch.float64), ("reference", torch.float32), ("fast", torch.float32)):
        model = copy.deepcopy(layers).to(dtype).train()
        leaf = x.to(dtype).clone().requires_grad_()
        out = per_point_layers(model, leaf, kernel)
        (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(dtype)).sum().backward()
        results[kernel, dtype] = [t.detach().double() for t in (out, leaf.grad, model[0].weight.grad,
                                                                 model[1].weight.grad, model[1].bias.grad)]
    exact = results["reference", torch.float64]
    for name, fast, autograd, want in zip(["out", "x", "weight", "gamma", "beta"], results["fast", torch.float32],
                                          results["reference", torch.float32], exact):
        scale = want.abs().max()
        assert (fast - want).abs().max() / scale <= max(2 * (autograd - want).abs().max() / scale, 1e-6), name


@pytest.mark.skipif(not {"avx512", "avx2"} <= set(available_paths()), reason="needs both vector paths")
def test_the_vector_paths_give_the_same_floats(monkeypatch):
    x, layers = _inputs(points=75), _layer(70, 45, "relu")
    results = []
    for path in ("avx512", "avx2"):
        monkeypatch.setenv("POINTDISTILL_TRAIN_KERNEL", path)
        model = copy.deepcopy(layers)
        leaf = x.clone().requires_grad_()
        out = float_point_layer(leaf, model[0].weight[:, :, 0], model[1], activation_bounds(model[2]))
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append([out, leaf.grad, model[0].weight.grad, model[1].weight.grad, model[1].bias.grad])
    for name, a, b in zip(["out", "x", "weight", "gamma", "beta"], *results):
        assert torch.equal(a, b), name


def test_only_relu_and_hardtanh_fuse():
    assert activation_bounds(nn.ReLU()) == (0.0, float("inf"))
    assert activation_bounds(nn.Hardtanh(-2.0, 0.5)) == (-2.0, 0.5)
    assert activation_bounds(nn.LeakyReLU()) is None and activation_bounds(nn.Identity()) is None


@pytest.mark.parametrize("spec", [
    {"name": "pointnet", "num_classes": 4, "point_widths": [16, 16, 16, 32, 64], "head_widths": [16],
     "dropout": 0.0, "input_transform": False, "feature_transform": False},
    {"name": "binary_pointnet", "num_classes": 4, "point_widths": [16, 16, 16, 32, 64], "head_widths": [16],
     "quantizer": "lsr", "aggregation": "ema", "dropout": 0.0},
])
def test_fast_models_run_their_float_layers_fused(spec, monkeypatch):
    """The fast teacher runs every float point layer but the pooled one fused (4), the fast
    student its layer on the coordinates (1); the reference path none."""
    import pointdistill.models.per_point as per_point_module
    from pointdistill.models import create_model

    calls = []
    original = per_point_module.float_point_layer
    monkeypatch.setattr(per_point_module, "float_point_layer", lambda *a: calls.append(1) or original(*a))
    model = create_model(spec).train()
    for kernel, expected in (("reference", 0), ("fast", 4 if spec["name"] == "pointnet" else 1)):
        calls.clear()
        model.training_kernel = kernel
        model(torch.randn(3, 40, 3)).logits.sum().backward()
        assert len(calls) == expected, kernel


def test_the_kernels_refuse_sizes_their_buffers_do_not_hold():
    """The bindings check every buffer against the sizes given (ValueError naming it, never an
    overrun), and the fused backward refuses the generic path, which leaves the products to torch."""
    import numpy as np

    from pointdistill.binary.popcount import kernels

    y, coef = np.zeros((4, 8), np.float32), np.zeros(8, np.float32)
    with pytest.raises(ValueError, match="h: buffer"):
        kernels().float_forward(y, coef, coef, coef, 0.0, 1.0, 4, 8, np.zeros(31, np.float32), 0, 1)
    with pytest.raises(ValueError, match="y: buffer"):
        kernels().float_moments(y, coef, 5, 8, np.zeros((2, 8)), 0, 1)
    x, w = np.zeros((4, 3), np.float32), np.zeros((8, 3), np.float32)
    with pytest.raises(ValueError, match="avx2 and avx512"):
        kernels().float_backward_fused(y, y, *[coef] * 6, 0.0, 1.0, x, w, 4, 8, 3, np.zeros(0, np.float32), w.copy(),
                                       0, 1)
