"""DGCNN's fused EdgeConv (pointdistill.models.edge_conv) against its autograd form, in training
and at inference."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch

from pointdistill.models import create_model, model_spec
from pointdistill.models import dgcnn
from pointdistill.models.dgcnn import DGCNNConfig, EdgeConv, edge_features
from pointdistill.models.edge_conv import _edge_conv, edge_max, edge_max_inference
from pointdistill.models.per_point import per_point_layers

pytestmark = pytest.mark.skipif(_edge_conv is None, reason="the _edge_conv extension is not built")


def _features(batch: int, n: int, channels: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(batch, n, channels, generator=torch.Generator().manual_seed(seed))
    x[:, 7] = x[:, 3]  # duplicated points: tied neighbours, and tied maxima over them
    x[0, 11] = x[0, 3]
    return x


def _edge_conv_layer(c_in: int, c_out: int, k: int, seed: int = 1) -> EdgeConv:
    torch.manual_seed(seed)
    layer = EdgeConv(c_in, c_out, k).train()
    bn = layer.mlp[1]
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.weight[1::3] *= -1  # negative scales: the max of the BatchNorm output is the min of the product
        bn.weight[2] = 0.0  # a zero scale: every edge ties
        bn.bias.normal_()
    return layer


def _step(layer: EdgeConv, x: torch.Tensor, fused: bool):
    x = x.clone().requires_grad_(True)
    out = layer(x, fused=fused)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    (out * weights).sum().backward()
    return out.detach(), x.grad, {name: p.grad.clone() for name, p in layer.named_parameters()}


@pytest.mark.parametrize("batch,n,c_in,c_out,k", [(3, 37, 5, 19, 6), (2, 50, 3, 64, 20)])
def test_fused_edge_conv_matches_autograd(batch, n, c_in, c_out, k):
    """Output, input and parameter gradients and the BatchNorm buffers equal the autograd form's,
    with negative and zero BatchNorm scales and tied neighbours."""
    x = _features(batch, n, c_in)
    reference, fused = _edge_conv_layer(c_in, c_out, k), None
    fused = copy.deepcopy(reference)
    out_ref, gx_ref, grads_ref = _step(reference, x, fused=False)
    out, gx, grads = _step(fused, x, fused=True)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-4, atol=1e-5)
    for name, value in grads_ref.items():
        torch.testing.assert_close(grads[name], value, rtol=1e-4, atol=1e-5, msg=name)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(fused.state_dict()[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_tied_maximum_splits_its_gradient_as_torch_does():
    """Every neighbour of a point equal: torch's max gives each 1/k of the gradient, and so does the fused op."""
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm1d(4).train()
    u = torch.randn(2, 6, 4, requires_grad=True)
    v = torch.randn(2, 6, 4)
    v[:, 1:4] = v[:, 1:2]  # neighbours 1, 2, 3 identical
    v.requires_grad_(True)
    index = torch.tensor([1, 2, 3]).expand(2, 6, 3).contiguous()
    fused = edge_max(u, v, index, bn, 0.2)
    fused.sum().backward()
    grad_fused = v.grad.clone()
    v.grad = None
    edges = u[:, :, None, :] + v[:, index[0, 0]][:, None, :, :]  # [B, N, 3, C]
    bn_ref = torch.nn.BatchNorm1d(4).train()
    plain = torch.nn.functional.leaky_relu(bn_ref(edges.reshape(-1, 4)), 0.2).view(edges.shape).amax(2)
    plain.sum().backward()
    torch.testing.assert_close(fused, plain.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_fused, v.grad, rtol=1e-4, atol=1e-5)
    assert torch.equal(grad_fused[:, 1], grad_fused[:, 2]) and torch.equal(grad_fused[:, 1], grad_fused[:, 3])


def test_fused_dgcnn_training_step_matches_reference():
    """A whole DGCNN (fast vs reference training kernel): loss and every parameter's gradient."""
    spec = model_spec("dgcnn", DGCNNConfig(num_classes=5, k=5, edge_widths=(8, 16), embed_width=32,
                                            head_widths=(16,), dropout=0.0))
    points = _features(4, 40, 3, seed=3)
    labels = torch.tensor([0, 1, 2, 3])
    grads = {}
    for kernel in ("reference", "fast"):
        torch.manual_seed(0)
        model = create_model(spec).train()
        model.training_kernel = kernel
        loss = torch.nn.functional.cross_entropy(model(points).logits, labels)
        loss.backward()
        grads[kernel] = (loss.detach(), {name: p.grad for name, p in model.named_parameters()})
    torch.testing.assert_close(grads["fast"][0], grads["reference"][0])
    for name, value in grads["reference"][1].items():
        torch.testing.assert_close(grads["fast"][1][name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_fused_edge_conv_step_is_freed_without_the_cycle_collector():
    """A training step's output is freed as soon as nothing refers to it: no reference cycle
    through the op's saved tensors (one held about 1 GB more every 10 s of ModelNet40 DGCNN
    training, until the process was killed for memory)."""
    layer = _edge_conv_layer(3, 16, 5)
    gc.collect()
    gc.disable()
    try:
        out = layer(_features(2, 30, 3), fused=True)
        freed = weakref.ref(out)
        out.sum().backward()
        del out
        assert freed() is None
    finally:
        gc.enable()


def _with_running_statistics(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` in eval mode with BatchNorm running statistics away from 0 and 1."""
    generator = torch.Generator().manual_seed(9)
    for bn in module.modules():
        if isinstance(bn, torch.nn.BatchNorm1d):
            bn.running_mean.normal_(generator=generator)
            bn.running_var.uniform_(0.5, 2.0, generator=generator)
    return module.eval()


@pytest.mark.parametrize("batch,n,c_in,c_out,k", [(3, 37, 5, 19, 6), (2, 50, 3, 64, 20)])
def test_inference_edge_conv_equals_the_edge_form(batch, n, c_in, c_out, k, monkeypatch):
    """At inference the layer pools over the neighbours without forming the edges: the output is
    the edge form's bit for bit (the form it takes when a gradient is asked, so saliency still
    works), with negative and zero BatchNorm scales and tied neighbours, and the full [B, N, k, 2C]
    edges through the unsplit layer agree within float rounding."""
    layer = _with_running_statistics(_edge_conv_layer(c_in, c_out, k))
    x = _features(batch, n, c_in)
    calls = []
    monkeypatch.setattr(dgcnn, "edge_max_inference", lambda *args: calls.append(1) or edge_max_inference(*args))
    with torch.no_grad():
        pooled = layer(x)
    assert calls == [1]  # the pooled path ran
    asked = x.clone().requires_grad_(True)
    edge_form = layer(asked)
    edge_form.sum().backward()
    assert torch.equal(pooled, edge_form.detach())
    assert asked.grad is not None and bool(asked.grad.abs().sum() > 0)
    with torch.no_grad():
        edges = edge_features(x, k)  # [B, N, k, 2C]
        full = per_point_layers(layer.mlp, edges.reshape(batch, -1, 2 * c_in)).view(batch, n, k, c_out).amax(2)
    torch.testing.assert_close(pooled, full, rtol=1e-5, atol=1e-5)


def test_dgcnn_inference_equals_the_edge_form(monkeypatch):
    """A whole DGCNN in eval mode: logits and pooled feature bit for bit those of the edge form."""
    spec = model_spec("dgcnn", DGCNNConfig(num_classes=5, k=5, edge_widths=(8, 16), embed_width=32,
                                            head_widths=(16,)))
    torch.manual_seed(0)
    model = _with_running_statistics(create_model(spec))
    points = _features(4, 40, 3, seed=3)
    with torch.no_grad():
        pooled = model(points)
        monkeypatch.setattr(dgcnn, "inference_edge_conv_applies", lambda *args: False)
        edge_form = model(points)
    assert torch.equal(pooled.logits, edge_form.logits) and torch.equal(pooled.pooled, edge_form.pooled)


def test_out_of_range_neighbour_is_refused():
    bn = torch.nn.BatchNorm1d(3).train()
    u, v = torch.randn(1, 4, 3), torch.randn(1, 4, 3)
    index = torch.tensor([[[0, 1], [1, 2], [2, 3], [3, 4]]])
    with pytest.raises(ValueError, match="neighbour index 4 out of range for 4 points"):
        edge_max(u, v, index, bn, 0.2)
