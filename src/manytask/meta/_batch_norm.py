"""Training-mode batch norm with a hand-written double backward, for second-order inner steps.

Second-order MAML differentiates the inner step's gradient, so every batch norm of a support
pass is differentiated twice. PyTorch's double backward of batch norm
(``NativeBatchNormBackwardBackward0``) is a general formula of some thirty elementwise passes;
on a CPU it took ~7x the time of the single backward and a fifth of a second-order MAML step
(docs/RESULTS.md). The same derivatives need three per-channel sums and two output passes:

Per channel, over its ``M`` values: ``xh = (x - mean) * r`` with ``r = (var + eps)^-1/2``
(biased variance), ``y = w * xh + b``. The backward pass maps ``(x, w, gy)`` to

    gb = sum(gy),  gw = sum(gy * xh),  gx = w * r * P(gy),
    P(v) = v - mean(v) - xh * mean(v * xh)

(``r * P`` is also the Jacobian of ``xh`` with respect to ``x``; ``P`` is symmetric). Its
vector-Jacobian product with cotangents ``(u, a, c)`` for ``(gx, gw, gb)`` is, writing
``s = gw / M``, ``g0 = gb / M``, ``A = sum(u * gy) - g0 * sum(u)``, ``B = sum(u * xh)``:

    d gy = w * r * P(u) + a * xh + c
    d w  = r * (A - s * B)
    d x  = r * P(k) - w * r^2 * (A - s * B) * xh / M,   k = (a - w * r * B / M) * gy - w * r * s * u

(``k`` is the cotangent reaching ``xh``; the last term is the one through ``r``). The tests
compare it with autograd's in float64 (to 1e-15) and through whole MAML meta-gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor


def batch_norm_twice(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """``F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)``, cheaper to
    differentiate twice (and exact to any order).

    ``x`` is ``[N, C, *]``; statistics per channel over every other dimension.
    """
    return _BatchNorm.apply(x, weight, bias, eps)


class _BatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float):
        y, mean, rstd = torch.ops.aten.native_batch_norm(x, weight, bias, None, None, True, 0.0,
                                                         eps)  # fmt: skip
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.eps = eps
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, gy: Tensor):
        x, weight, mean, rstd = ctx.saved_tensors
        gx, gw, gb = _Backward.apply(gy, x, weight, mean, rstd, ctx.eps)  # gw: None without weight
        return gx, gw, gb if ctx.has_bias else None, None


class _Backward(torch.autograd.Function):
    """``(gy, x, weight) -> (gx, gw, gb)`` of batch norm; its backward is the formula above.

    That backward runs without a graph in a second-order meta-gradient. Asked for a graph
    (a third derivative), it recomputes the statistics it uses from ``x`` and ``gy`` with
    differentiable operations, so that the formula is differentiated exactly too.
    """

    @staticmethod
    def forward(ctx, gy, x, weight, mean, rstd, eps):
        # One layout for both: the CPU kernel is several times slower on a channels-last x
        # with an NCHW gy (which a max-pool's double backward hands over).
        gy = gy.contiguous(memory_format=_layout(x))
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
            gy, x, weight, None, None, mean, rstd, True, eps, [True, weight is not None, True]
        )
        ctx.save_for_backward(gy, x, weight, mean, rstd, gw, gb)
        ctx.eps = eps
        return gx, gw, gb

    @staticmethod
    def backward(ctx, u, a, c):
        gy, x, weight, mean, rstd, gw, gb = ctx.saved_tensors
        dims = [0, *range(2, x.dim())]
        m = x.numel() // x.shape[1]
        act = x.dtype  # the activations' dtype (bf16 under autocast; the statistics are fp32)
        shape = [1, -1] + [1] * (x.dim() - 2)

        def per_channel(v: Tensor) -> Tensor:  # a [C] coefficient, broadcast over x
            return v.to(act).view(shape)

        graph = torch.is_grad_enabled()
        if graph:  # a third derivative is wanted: statistics as functions of x and gy
            mean = x.mean(dims, dtype=mean.dtype)
            rstd = torch.rsqrt(x.var(dims, unbiased=False).to(mean.dtype) + ctx.eps)
            gb = gy.sum(dims, dtype=mean.dtype)
        r = rstd
        xh = torch.addcmul(per_channel(-mean * r), x, per_channel(r))
        s = (_channel_dot(gy, xh) if graph or gw is None else gw) / m
        g0 = gb / m
        wr = r if weight is None else weight * r
        if u is None:  # gx unused: only the per-channel outputs were differentiated
            sum_u = sum_uxh = sum_ugy = torch.zeros_like(r)
        else:
            u = u.to(act)
            sum_u = u.sum(dims).to(r.dtype)  # bf16: accumulated in fp32, rounded once
            sum_uxh = _channel_dot(u, xh)
            sum_ugy = _channel_dot(u, gy)
        q = sum_ugy - g0 * sum_u - s * sum_uxh  # A - s B
        b_m = sum_uxh / m
        # d gy = wr * (u - mean(u) - xh * B / M) + a * xh + c
        kx = -wr * b_m if a is None else a - wr * b_m
        shift = -wr * sum_u / m if c is None else c - wr * sum_u / m
        d_gy = torch.addcmul(per_channel(shift), xh, per_channel(kx))
        # d x = r * P(kx * gy + ku * u) - w r^2 (A - s B) xh / M
        ku = -wr * s
        c_xh = -r * (kx * s + ku * b_m + wr * q / m)
        c_0 = -r * (kx * g0 + ku * sum_u / m)
        d_x = torch.addcmul(per_channel(c_0), xh, per_channel(c_xh))
        d_x = d_x.addcmul_(gy, per_channel(r * kx))
        if u is not None:
            d_gy = d_gy.addcmul_(u, per_channel(wr))
            d_x = d_x.addcmul_(u, per_channel(r * ku))
        d_w = r * q if weight is not None else None
        return d_gy, d_x, d_w, None, None, None


def _layout(x: Tensor) -> torch.memory_format:
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last if not x.is_contiguous() else torch.contiguous_format
    return torch.contiguous_format


def _channel_dot(p: Tensor, q: Tensor) -> Tensor:
    """``(p * q).sum`` over every dimension but 1 (channels) of two ``[N, C, *]`` tensors of
    one dtype, as fp32 or fp64. (bf16: the products and the result are rounded to bf16, the
    sum accumulated in fp32 - as in autograd's own formula - since ``sum(dtype=float32)`` of a
    bf16 tensor was 8x slower here.)"""
    n, ch = p.shape[:2]
    same = p.dtype == q.dtype and p.dtype in (torch.float32, torch.float64)
    if same and p.is_contiguous() and q.is_contiguous():
        return torch.linalg.vecdot(p.view(n, ch, -1), q.view(n, ch, -1)).sum(0)
    return (p * q).sum([0, *range(2, p.dim())]).to(torch.promote_types(p.dtype, torch.float32))
