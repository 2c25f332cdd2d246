"""Each quantizer's forward values and straight-through gradients against hand-computed cases."""

import math

import pytest
import torch

from pointdistill.binary import BinaryLinear, create_quantizer, ema_offset, initialize_binary_scales, sign

X = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.0, 1.5])


def grad_of(fn, x):
    x = x.clone().requires_grad_(True)
    fn(x).sum().backward()
    return x.grad


def test_sign_of_zero_is_plus_one():
    assert sign(X).tolist() == [-1, -1, 1, 1, 1, 1]


@pytest.mark.parametrize("name", ["bnn", "lsr"])
def test_activation_uses_clipped_ste(name):
    q = create_quantizer(name)
    assert grad_of(lambda x: q.activation(x[None]), X).tolist() == [0, 1, 1, 1, 1, 0]


def test_bnn_weight_is_sign_with_clipped_ste():
    w = torch.tensor([[0.5, -1.5], [0.0, -0.2]])
    q = create_quantizer("bnn")
    assert q.weight(w).tolist() == [[1, -1], [1, -1]]
    assert grad_of(q.weight, w).tolist() == [[1, 0], [1, 1]]


def test_xnor_scales_rows_and_samples():
    w = torch.tensor([[1.0, -2.0, 4.0], [0.5, 0.5, -1.0]])
    q = create_quantizer("xnor")
    # row means 1 and 0; alphas mean|W_row| = 7/3 and 2/3
    expected = torch.tensor([[1.0, -1.0, 1.0], [1.0, 1.0, -1.0]]) * torch.tensor([[7 / 3], [2 / 3]])
    assert torch.allclose(q.weight(w), expected)
    a = torch.tensor([[2.0, -4.0], [0.0, -1.0]])
    assert torch.allclose(q.activation(a), torch.tensor([[3.0, -3.0], [0.5, -0.5]]))
    # The scales are detached: the gradient is the clipped STE times the scale.
    g = grad_of(q.activation, a)
    assert torch.allclose(g, torch.tensor([[0.0, 0.0], [0.5, 0.5]]))


def test_irnet_standardises_rows_scales_by_a_power_of_two_and_uses_ede():
    w = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    q = create_quantizer("irnet")
    std = (w - w.mean()) / w.std()
    power = 2 ** round(math.log2(std.abs().mean().item()))
    assert torch.allclose(q.weight(w), sign(std) * power)
    for epoch, epochs in [(0, 10), (5, 10), (9, 10)]:
        q.set_progress(epoch, epochs)
        t = 10 ** (-3 + 4 * epoch / epochs)
        k = max(1 / t, 1.0)
        expected = k * t * (1 - torch.tanh(t * X) ** 2)
        assert torch.allclose(grad_of(q.activation, X), expected, rtol=1e-5)
    assert q.activation(X).tolist() == sign(X).tolist()


def test_lsr_uses_one_global_mean_and_a_fixed_scale_initialised_from_the_first_batch():
    torch.manual_seed(0)
    layer = BinaryLinear(8, 5, "lsr")
    w = layer.weight.detach()
    assert torch.equal(layer.quantizer.weight(w), sign(w - w.mean()))
    x = torch.randn(4, 30, 8)  # 4 clouds of 30 points, 8 features (last)
    initialize_binary_scales(layer, x)
    rows = x.reshape(-1, 8)
    wc = w - w.mean()
    alpha0 = (rows @ wc.T).std() / (sign(rows) @ sign(wc).T).std()
    assert layer.quantizer.alpha.item() == pytest.approx(alpha0.item(), rel=1e-5)
    y = layer(x)
    manual = alpha0 * torch.einsum("oc,bnc->bno", sign(wc), sign(x))
    assert torch.allclose(y, manual, rtol=1e-4, atol=1e-4)
    # fixed from here on: not a parameter (no optimizer steps it), saved with the model
    assert "quantizer.alpha" not in dict(layer.named_parameters())
    assert layer.state_dict()["quantizer.alpha"].item() == pytest.approx(alpha0.item(), rel=1e-5)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1)
    layer(x).sum().backward()
    optimizer.step()
    assert layer.quantizer.alpha.item() == pytest.approx(alpha0.item(), rel=1e-5)


def test_bireal_approxsign_gradient():
    q = create_quantizer("bireal")
    expected = [0.0, 2 + 2 * -0.5, 2.0, 2 - 2 * 0.3, 0.0, 0.0]
    assert torch.allclose(grad_of(q.activation, X), torch.tensor(expected))
    w = torch.tensor([[1.0, -3.0]])
    assert torch.allclose(q.weight(w), torch.tensor([[2.0, -2.0]]))


def test_bireal_approxsign_gradient_is_bit_exact_to_its_two_slopes():
    torch.manual_seed(0)
    x = torch.cat([torch.linspace(-1.5, 1.5, 10001), torch.tensor([-1.0, 1.0, 0.0, -0.0])]).requires_grad_()
    upstream = torch.randn_like(x)
    create_quantizer("bireal").activation_pattern(x).backward(upstream)
    d = x.detach()
    slope = torch.where(d < 0, 2 + 2 * d, 2 - 2 * d) * (d.abs() < 1).float()  # Bi-Real's definition
    assert torch.equal(x.grad, upstream * slope)


@pytest.mark.parametrize("source, bound", [("hardtanh_pattern_source", 1.0), ("sign_source", 3.0)])
@pytest.mark.parametrize("name", ["bnn", "xnor", "irnet", "lsr", "bireal"])
def test_the_fused_layers_source_is_the_pattern_bit_for_bit(name, source, bound):
    """The fused point layers read only the signs of their input (bit set where x >= 0, so -0 is
    +1): the source must give the pattern's signs and its exact gradient, on a Hardtanh output
    (hardtanh_pattern_source) and, with real-valued shortcuts, on any input (sign_source: x
    itself, no +-1 tensor, the clip included)."""
    torch.manual_seed(0)
    x = torch.cat([torch.linspace(-bound, bound, 10001), torch.tensor([-1.0, 1.0, 0.0, -0.0])]).reshape(1, -1, 5)
    upstream = torch.randn_like(x)
    q = create_quantizer(name)
    q.set_progress(3, 10)  # IR-Net's estimator at a middle epoch
    grads = []
    for make in (q.activation_pattern, getattr(q, source)):
        leaf = x.clone().requires_grad_()
        out = make(leaf)
        assert torch.equal(out.detach() >= 0, sign(x) > 0)
        out.backward(upstream)
        grads.append(leaf.grad)
    assert torch.equal(grads[0], grads[1])
    assert (grads[0][x.abs() > 1] == 0).all() or name == "irnet"  # clipped outside [-1, 1] (EDE is smooth)


def test_unknown_quantizer_is_named():
    with pytest.raises(ValueError, match="unknown quantizer 'ternary'"):
        create_quantizer("ternary")


@pytest.mark.parametrize("n, expected", [(1024, -3.2044), (2048, -3.3988), (4096, -3.5840)])
def test_ema_offset_is_computed_for_the_actual_point_count(n, expected):
    assert ema_offset(n) == pytest.approx(expected, abs=5e-5)


def test_ema_makes_the_sign_of_the_max_of_gaussians_balanced():
    from pointdistill.binary import create_aggregation

    torch.manual_seed(0)
    pooled = create_aggregation("ema")(torch.randn(4000, 512, 1))  # [B, N, C]
    assert 0.47 < (sign(pooled) > 0).float().mean().item() < 0.53
