"""The fused point layer (kernel "fast") against the autograd reference: same loss, same gradient
for every parameter, same BatchNorm buffers, same optimiser step; ties, negative and zero
BatchNorm slopes; every popcount path this CPU runs."""

import copy

import pytest
import torch

from pointdistill.binary import BinaryLinear, initialize_binary_scales
from pointdistill.binary.popcount import FALLING, FLAT, RISING, BinaryProduct, PooledProduct, available_paths
from pointdistill.distill import student_spec
from pointdistill.models import create_model

# odd sizes: K = 72 (two words, padded), D = 203 (not a multiple of 8), N = 77
TEACHER = {"name": "pointnet", "num_classes": 7, "point_widths": [16, 24, 40, 72, 203], "head_widths": [48, 24],
           "dropout": 0.0, "input_transform": False, "feature_transform": False}
QUANTIZERS = ["bnn", "xnor", "irnet", "lsr", "bireal"]


def _loss(out):
    """Touches logits and pooled features, as the distillation loss does."""
    weights = torch.linspace(-1, 1, out.pooled.shape[1], dtype=out.pooled.dtype)
    return (out.logits ** 2).sum() * 0.1 + (out.pooled * weights).sum()


def _step(model, points, kernel):
    model = copy.deepcopy(model)
    model.training_kernel = kernel
    model.train()
    loss = _loss(model(points))
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return model, loss.item(), grads


def _assert_same_step(model, points, skip=()):
    """Fast and reference: equal loss, gradients (relative to the largest gradient entry of the
    model) and BatchNorm buffers, within float32 rounding."""
    ref_model, ref_loss, ref = _step(model, points, "reference")
    fast_model, fast_loss, fast = _step(model, points, "fast")
    # the loss sums 1,015 pooled values (5 x 203) of either sign: float32 rounding of that sum
    # reached 1.1e-5 of it for irnet-max on one thread, so the loss gets the gradients' rtol
    assert fast_loss == pytest.approx(ref_loss, rel=1e-4, abs=1e-5)
    assert ref.keys() == fast.keys()
    scale = max(g.abs().max().item() for g in ref.values())
    for name in ref:
        if name not in skip:
            torch.testing.assert_close(fast[name], ref[name], rtol=1e-4, atol=2e-5 * scale, msg=name)
    for (name, a), b in zip(ref_model.named_buffers(), fast_model.buffers()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=name)
    return ref, fast


def _student(quantizer, aggregation, points):
    torch.manual_seed(3)
    model = create_model(student_spec(TEACHER, quantizer, aggregation))
    initialize_binary_scales(model, points)
    return model


def _clouds(batch=5, n=77, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, 3, generator=generator)


@pytest.mark.parametrize("aggregation", ["max", "ema"])
@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_student_step_matches_reference(quantizer, aggregation):
    points = _clouds()
    model = _student(quantizer, aggregation, points)
    _assert_same_step(model, points)


def _binary_point_inputs(model, points) -> list[torch.Tensor]:
    """The inputs of the trunk's binary layers in the reference forward: with shortcuts, all but
    the first are sums of Hardtanh outputs."""
    seen = []
    hooks = [m.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
             for m in model.trunk if isinstance(m, BinaryLinear)]
    _step(model, points, "reference")
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("quantizer", QUANTIZERS)
def test_a_student_with_shortcuts_steps_like_the_reference(quantizer):
    """Real-valued shortcuts: the fused layers read inputs beyond [-1, 1] (their straight-through
    estimators see the sums), and the 32 -> 64 layer's shortcut repeats its input. A sum that the
    two paths round to either side of the estimator's clip at |x| = 1 (1e-7 apart: the fused
    BatchNorm sums in another order) gets its gradient in one path only, so these clouds have none
    within 1e-5 of it that is not exactly +-1 (a saturated sum, the same in both)."""
    points = _clouds(seed=1)
    torch.manual_seed(3)
    teacher = {**TEACHER, "point_widths": [16, 32, 32, 64, 203]}
    model = create_model(student_spec(teacher, quantizer, "ema", shortcuts=True))
    initialize_binary_scales(model, points)
    assert model.config.shortcuts
    distance = torch.cat([((x.abs() - 1).abs()).flatten() for x in _binary_point_inputs(model, points)[1:]])
    assert (distance == 0).any() and not ((distance > 0) & (distance < 1e-5)).any()
    _assert_same_step(model, points)


@pytest.mark.parametrize("transforms", [False, True])
def test_teacher_step_matches_reference(transforms):
    torch.manual_seed(3)
    spec = {**TEACHER, "input_transform": transforms, "feature_transform": transforms}
    _assert_same_step(create_model(spec), _clouds())


@pytest.mark.parametrize("quantizer", ["bnn", "xnor"])
def test_tied_maxima_split_the_gradient_as_torch_does(quantizer):
    """Clouds of 9 points where every point appears several times: most maxima are tied."""
    base = _clouds(batch=4, n=3, seed=1)
    points = base.repeat_interleave(3, dim=1)
    model = _student(quantizer, "max", points)
    ref, fast = _assert_same_step(model, points)
    assert fast["trunk.9.weight"].abs().sum() > 0


def test_negative_and_zero_batchnorm_slopes():
    """A negative slope pools the minimum of the product; a zero slope ties every point."""
    points = _clouds()
    model = _student("bnn", "ema", points)
    with torch.no_grad():
        model.trunk[-1].weight[:60] = -0.7
        model.trunk[-1].weight[60:70] = 0.0
    _assert_same_step(model, points)
    torch.manual_seed(3)
    teacher = create_model(TEACHER)
    with torch.no_grad():
        teacher.trunk[-2].weight[:60] = -0.7
        teacher.trunk[-2].weight[60:70] = 0.0
    _assert_same_step(teacher, points)


def test_one_optimiser_step_gives_the_same_parameters():
    points = _clouds()
    model = _student("lsr", "ema", points)
    model.trunk[-1].eps = 0.5  # Adam's first step is lr * sign(grad): keep the LSR scale's gradient out of the noise
    after = {}
    for kernel in ("reference", "fast"):
        trained = copy.deepcopy(model)
        trained.training_kernel = kernel
        optimizer = torch.optim.Adam(trained.parameters(), lr=1e-3)
        _loss(trained(points)).backward()
        optimizer.step()
        after[kernel] = trained.state_dict()
    for name, value in after["reference"].items():
        torch.testing.assert_close(after["fast"][name], value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("k", [41, 130])  # one word padded; three words
@pytest.mark.parametrize("path", available_paths())
def test_every_path_finds_the_exact_extremes_ties_and_gram(path, k):
    """Kernels against the dense integer product: popcounts, extremes, the pooled extreme's tie
    counts and the scatter over its tied points, and the Gram matrix of the signs."""
    generator = torch.Generator().manual_seed(7)
    a = torch.randn(3, 67, k, generator=generator).sign()  # [B, N, K], 67 points: two words on the point axis
    a[:, 20] = a[:, 4]  # duplicated points tie
    a[1] *= 0.37  # only the signs are read
    w = torch.randn(37, k, generator=generator).sign()  # 37 channels: two groups of 32, padded
    popcount = (k - a.sign() @ w.T) / 2  # [B, N, C]
    product = BinaryProduct(a, w, path)
    assert torch.equal(torch.from_numpy(product.p[..., :37]).double(), popcount)
    low, high = product.extremes()
    assert torch.equal(low, popcount.amin(1).long()) and torch.equal(high, popcount.amax(1).long())
    kind = torch.where(torch.arange(37) % 2 == 0, RISING, FALLING).repeat(3, 1)
    kind[:, 5] = FLAT  # every point
    pooled = PooledProduct(a, w, kind, path)
    assert all(torch.equal(x, y) for x, y in zip(pooled.extremes(), (low, high)))
    target = torch.where(kind == FALLING, high, low)
    tied = (popcount == target[:, None]) | (kind == FLAT)[:, None]
    assert torch.equal(pooled.tie_list.counts(), tied.sum(1))
    coef = torch.randn(3, 37, generator=generator)
    grad_a = torch.zeros(3, 67, k)
    sparse_w = pooled.tie_list.scatter(coef, a, w, grad_a)
    mask = tied.float()
    torch.testing.assert_close(sparse_w, torch.einsum("bc,bnc,bnk->ck", coef, mask, a))
    torch.testing.assert_close(grad_a, torch.einsum("bc,bnc,ck->bnk", coef, mask, w))
    gram, sums = product.grams()
    signs = a.sign()
    assert torch.equal(gram, (signs.transpose(1, 2) @ signs).int()) and torch.equal(sums, signs.sum(1).int())


def test_more_ties_than_the_first_guess_are_all_kept():
    """Every point of a cloud equal: each channel ties N times, beyond the initial room for 16."""
    a = torch.randn(2, 1, 50).sign().expand(2, 40, 50).contiguous()
    w = torch.randn(33, 50).sign()
    pooled = PooledProduct(a, w, torch.full((2, 33), RISING), available_paths()[0])
    assert pooled.tie_list.cap >= 40 * 33 and torch.equal(pooled.tie_list.counts(), torch.full((2, 33), 40))


@pytest.mark.parametrize("path", available_paths())
def test_training_step_on_every_path(path, monkeypatch):
    monkeypatch.setenv("POINTDISTILL_TRAIN_KERNEL", path)
    points = _clouds()
    _assert_same_step(_student("xnor", "ema", points), points)


def test_unknown_path_is_refused(monkeypatch):
    monkeypatch.setenv("POINTDISTILL_TRAIN_KERNEL", "avx9000")
    points = _clouds()
    model = _student("bnn", "ema", points)
    model.training_kernel = "fast"
    with pytest.raises(ValueError, match="POINTDISTILL_TRAIN_KERNEL"):
        model(points)


def test_fast_path_is_deterministic():
    """Same model, same clouds: bit-identical gradients and buffers (threads split by samples)."""
    points = _clouds(batch=8, n=200)
    model = _student("lsr", "ema", points)
    first, second = _step(model, points, "fast"), _step(model, points, "fast")
    assert first[1] == second[1]
    for name in first[2]:
        assert torch.equal(first[2][name], second[2][name]), name
    for a, b in zip(first[0].buffers(), second[0].buffers()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("threads", [1, 3])
def test_any_thread_count_matches_reference(threads):
    """The kernels split the 5 clouds into torch's thread count of slices (3: uneven ones)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        points = _clouds()
        _assert_same_step(_student("xnor", "max", points), points)
    finally:
        torch.set_num_threads(before)
