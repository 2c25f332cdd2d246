"""DGCNN's EdgeConv after its linear layer — BatchNorm, LeakyReLU and the max over the k
neighbours — fused for CPU training, without the [B, N, k, C] edge tensors.

EdgeConv's linear layer splits over the centre and the neighbour (pointdistill.models.dgcnn), so
an edge's pre-activation is e_ij = u_i + v_j with u, v [B, N, C]. BatchNorm (a positive or
negative scale per channel) and LeakyReLU are monotone per channel, so the max over j of
LeakyReLU(BN(e_ij)) is LeakyReLU(BN(u_i + v*_i)), v*_i the max of v_j over i's neighbours (the
min where the scale is negative). BatchNorm's batch statistics over all B N k edges come from
per-point sums: sum e = k sum u + sum_j indeg_j v_j and sum e^2 = k sum u^2 + 2 sum_i u_i s_i +
sum_j indeg_j v_j^2, with s_i the sum of v over i's neighbours and indeg_j how many lists j is in.
The backward follows BatchNorm's: the max's gradient goes to the neighbours reaching v*_i (split
evenly where several tie, as torch splits a tied max), the statistics' part needs s, indeg and
the sum of u over each point's in-edges. The reductions over the edges are compiled
(``_edge_conv.c``); the statistics' sums are accumulated in float64.

Exact against the autograd form within float32 rounding (tests/models/test_edge_conv.py).

At inference (BatchNorm on its running statistics, no gradient asked) the same max over the
neighbours gives the layer exactly, with no statistics to gather: ``edge_max_inference``, which
recording a DGCNN teacher and testing one run on.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pointdistill.binary.popcount import threads_for, update_running_stats

try:
    from pointdistill.models import _edge_conv
except ImportError:  # not built: EdgeConv takes its autograd form
    _edge_conv = None


def fused_edge_conv_applies(u: torch.Tensor, bn: nn.BatchNorm1d) -> bool:
    """Whether ``edge_max`` runs for u [B, N, C]: a training-mode affine BatchNorm, float32 on the
    CPU, the kernels built."""
    return (_edge_conv is not None and bn.training and bn.affine and u.device.type == "cpu"
            and u.dtype == torch.float32 and u.shape[0] * u.shape[1] > 1)


def inference_edge_conv_applies(u: torch.Tensor, v: torch.Tensor, bn: nn.BatchNorm1d) -> bool:
    """Whether ``edge_max_inference`` runs for u, v [B, N, C]: an eval-mode BatchNorm on running
    statistics, no gradient asked of u or v, float32 on the CPU, the kernels built."""
    return (_edge_conv is not None and not bn.training and bn.running_var is not None
            and not (u.requires_grad or v.requires_grad) and u.device.type == "cpu" and u.dtype == torch.float32)


def _edge_reduce(v: torch.Tensor, index: torch.Tensor, lower: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The compiled reductions of contiguous v float32 [B, N, C] over the neighbours index int64
    [B, N, k] (``_edge_conv.c``): top [B, N, C] (the max, the min where ``lower`` [C] is set), ties
    int32 [B, N, C], sums [B, N, C], counts int32 [B, N] (how many lists each point is in)."""
    batch, n, channels = v.shape
    top, sums = torch.empty(batch, n, channels), torch.empty(batch, n, channels)
    ties = torch.empty(batch, n, channels, dtype=torch.int32)
    counts = torch.empty(batch, n, dtype=torch.int32)
    _edge_conv.edge_reduce(v.numpy(), index.numpy(), np.ascontiguousarray(lower.numpy().astype(np.uint8)), batch, n,
                           index.shape[-1], channels, top.numpy(), ties.numpy(), sums.numpy(), counts.numpy(),
                           threads_for(batch))
    return top, ties, sums, counts


def _total(x: torch.Tensor) -> torch.Tensor:
    """Per channel, the sum over clouds and points of x [B, N, C], accumulated in float64: [C]."""
    return x.sum((0, 1), dtype=torch.float64)


class _EdgeMax(torch.autograd.Function):
    """out[b, i, c] = max_j leaky_relu(BN(u[b, i] + v[b, j]))[c] over the listed j, BatchNorm in training mode."""

    @staticmethod
    def forward(ctx, u, v, index, gamma, beta, bn, negative_slope):
        batch, n, channels = u.shape
        k = index.shape[-1]
        m = batch * n * k
        u, v = u.detach().contiguous(), v.detach().contiguous()
        index = index.contiguous()
        g64, b64 = gamma.detach().double(), beta.detach().double()
        top, ties, s, counts = _edge_reduce(v, index, g64 < 0)
        indeg = counts.to(u.dtype)[..., None]  # [B, N, 1]
        weighted = indeg * v
        mean = (k * _total(u) + _total(weighted)) / m
        squares = k * _total(u * u) + 2 * _total(u * s) + _total(weighted * v)
        var = (squares / m - mean.square()).clamp_min(0)
        invstd = (var + bn.eps).rsqrt()
        pooled = u + top  # e at the pooled edge, [B, N, C]
        flat = g64 == 0
        if bool(flat.any()):  # every edge of a point equal after BatchNorm: torch's max splits its
            pooled[..., flat] = (u + s / k)[..., flat]  # gradient over all k, so gamma's sees their mean
        scale = g64 * invstd
        z = torch.addcmul((b64 - mean * scale).to(u.dtype), pooled, scale.to(u.dtype))
        update_running_stats(bn, mean, var, m)
        out = torch.nn.functional.leaky_relu(z, negative_slope)
        # z > 0 iff out > 0; the output itself is not kept on ctx: out -> its grad_fn -> ctx -> out
        # would be a reference cycle that only Python's cycle collector frees
        ctx.tensors = (u, v, index, top, ties, indeg, s, pooled, z > 0)
        ctx.stats = (mean, invstd, g64, negative_slope, k, m)
        return out

    @staticmethod
    def backward(ctx, grad):
        u, v, index, top, ties, indeg, s, pooled, positive = ctx.tensors
        mean, invstd, g64, negative_slope, k, m = ctx.stats
        batch, n, channels = u.shape
        d = grad * torch.where(positive, 1.0, negative_slope)  # d loss / d z at the pooled edge
        dbeta = _total(d)
        dgamma = (_total(d * pooled) - mean * dbeta) * invstd  # sum of d xhat
        a, b, p = dbeta / m, dgamma / m, g64 * invstd  # d e_ij = p (d_ij - a - b xhat_ij)
        # sum_j xhat_ij = (k u_i + s_i - k mean) invstd; over j's in-edges (r_j + indeg_j (v_j - mean)) invstd
        centre = (-p * b * invstd).to(u.dtype)  # the coefficient of both sums
        share = d / ties
        sparse, reverse = torch.empty_like(u), torch.empty_like(u)
        _edge_conv.edge_scatter(v.numpy(), index.numpy(), top.numpy(), share.numpy(), u.numpy(), batch, n, k, channels,
                                sparse.numpy(), reverse.numpy(), threads_for(batch))
        p32 = p.to(u.dtype)
        grad_u = (p32 * d + centre * (k * u + s) + (p * (b * invstd * k * mean - k * a)).to(u.dtype)).to(grad.dtype)
        grad_v = (p32 * sparse + centre * (reverse + indeg * v)
                  + indeg * (p * (b * invstd * mean - a)).to(u.dtype)).to(grad.dtype)
        return grad_u, grad_v, None, dgamma.to(grad.dtype), dbeta.to(grad.dtype), None, None


def edge_max(u: torch.Tensor, v: torch.Tensor, index: torch.Tensor, bn: nn.BatchNorm1d,
             negative_slope: float) -> torch.Tensor:
    """max over j in index[b, i] of leaky_relu(bn(u[b, i] + v[b, j])), BatchNorm in training mode
    over all B N k edges (its running statistics updated as its forward would).

    u, v: float32 [B, N, C] (the centre and neighbour terms of EdgeConv's linear layer); index:
    int64 [B, N, k] into N. Returns float32 [B, N, C]. Where fused_edge_conv_applies."""
    return _EdgeMax.apply(u, v, index, bn.weight, bn.bias, bn, negative_slope)


def edge_max_inference(u: torch.Tensor, v: torch.Tensor, index: torch.Tensor, bn: nn.BatchNorm1d,
                       negative_slope: float) -> torch.Tensor:
    """max over j in index[b, i] of leaky_relu(bn(u[b, i] + v[b, j])), BatchNorm in eval mode: a
    fixed affine map per channel, monotone, so the max is leaky_relu(bn(u_i + v*_i)) with v*_i the
    max of v over i's neighbours (the min where the scale is negative). Equal to the [B, N, k, C]
    form bit for bit: adding u_i, the affine map and LeakyReLU are monotone in float32 too.

    u, v: float32 [B, N, C]; index: int64 [B, N, k] into N. Returns float32 [B, N, C]. Where
    inference_edge_conv_applies."""
    batch, n, channels = u.shape
    lower = bn.weight.detach() < 0 if bn.affine else torch.zeros(channels, dtype=torch.bool)
    top = _edge_reduce(v.contiguous(), index.contiguous(), lower)[0]
    z = bn((u + top).reshape(-1, channels)).view(batch, n, channels)
    return torch.nn.functional.leaky_relu(z, negative_slope)
