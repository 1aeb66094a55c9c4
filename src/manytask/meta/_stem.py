"""The first block of an image network (convolution, batch norm, max-pool, ReLU) in one pass.

The first convolution of a Conv4 sees one input channel: each output value is a dot product
of nine pixels, so the block's time goes to moving its output, 64 channels at full resolution
(15 MB for 75 Omniglot images), through batch norm, the pool and their backward passes - two
fifths of a MAML step's query pass on a CPU (docs/RESULTS.md). With few input values per
output (``K = C_in * k_h * k_w``), three facts let the block skip most of that traffic:

- the batch statistics of the convolution's output ``x = W p + b`` (``p`` a patch of the
  input) follow from the patches' mean ``m`` and covariance ``S`` (``K x K``):
  ``mean = W m + b``, ``var = diag(W S W^T)`` - no pass over ``x``;
- batch norm is a per-channel affine map ``s * x + t`` (``s = gamma / sqrt(var + eps)``), and a
  max-pool commutes with it where ``s >= 0``; where ``s < 0`` it picks the minimum, so those
  channels are convolved with ``-W, -b`` and pooled as maxima. The affine map then runs on the
  pooled values, a quarter of the full resolution;
- the convolution is one matrix product of the ``[N*L, K]`` patches with ``W^T``, whose
  output is channels-last, the layout of the fast CPU max-pool.

The backward pass is written out: the pool's gradient is scattered to the full resolution
once and multiplied with the patches for the weight's gradient; the statistics contribute
``g_mean m^T + 2 g_var W S`` (``S`` symmetric). Values and gradients are those of
``relu(max_pool(batch_norm(conv(x))))`` up to rounding (tested against it in float64), except
where a pool window holds equal maxima, whose gradient goes to one of them either way.

Two forms:

- :func:`stem_block`, one task, fp32/fp64, with the backward pass written out (~1.8x faster than
  the layers at 75 Omniglot images). It is first order: asked for a graph of its backward
  (``create_graph=True``) it raises, instead of returning a gradient whose own derivative
  would be missing. :class:`~manytask.meta.functional.PerTaskNet` uses it in passes that are
  differentiated once (the query pass, first-order inner steps, evaluation).
- :func:`stem_tasks`, ``T`` tasks in one call, in differentiable operations: autograd takes
  its derivatives to any order (second-order support passes), under autocast too. It returns
  the grouped layout of :class:`~manytask.meta.functional.GroupedNet`, which uses it for every
  pass; ``PerTaskNet`` uses it (``T = 1``) for second-order passes and under autocast.

The convolution's bias has an exact zero derivative (batch norm subtracts it again); both
forms return that zero rather than the rounding noise of the layers one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["StemSpec", "stem_block", "stem_tasks"]


@dataclass(frozen=True)
class StemSpec:
    """The block's hyper-parameters: the convolution's, the batch norm's eps, the pool's."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    eps: float
    pool_kernel: tuple[int, int]
    pool_stride: tuple[int, int]
    pool_padding: tuple[int, int]
    ceil_mode: bool
    relu: bool


def stem_block(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    gamma: Tensor | None,
    beta: Tensor | None,
    spec: StemSpec,
    stats_rows: int | None = None,
) -> Tensor:
    """``[relu](max_pool(batch_norm(conv2d(x, weight, bias))))`` with training-mode batch norm
    (biased batch statistics, no running statistics), NCHW in and out.

    Args:
        x: ``[N, C_in, H, W]`` inputs, not differentiated.
        weight, bias: the convolution's (``[C, C_in, k_h, k_w]``, ``[C]`` or None).
        gamma, beta: batch norm's affine parameters (``[C]`` or None).
        spec: the layers' hyper-parameters.
        stats_rows: normalise with the statistics of the first ``stats_rows`` examples only.
    """
    if x.requires_grad:
        raise ValueError("stem_block: its input is not differentiated (image data only)")
    return _Stem.apply(x, weight, bias, gamma, beta, spec, stats_rows)


class _Stem(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, gamma, beta, spec: StemSpec, stats_rows):
        n = x.shape[0]
        c = weight.shape[0]
        patches = _patches(x, spec)  # [N*L, K]: one row per output position
        k = patches.shape[1]
        ho = _out_size(x.shape[2], spec, 0)
        wo = _out_size(x.shape[3], spec, 1)
        length = ho * wo
        ref = patches if stats_rows is None else patches[: stats_rows * length]
        w = weight.reshape(c, k)
        stats = _statistics(ref[None], w[None], None if gamma is None else gamma[None], spec.eps)
        mean_p, cov_w, mean, rstd, scale, sign = (v[0] for v in stats)
        sign = sign.to(x.dtype)
        # sign * (x - b), channels-last: [N*L, C] is [N, Ho, Wo, C]
        h = (patches @ (w * sign[:, None]).T).view(n, ho, wo, c).permute(0, 3, 1, 2)
        pooled, idx = F.max_pool2d(
            h, spec.pool_kernel, spec.pool_stride, spec.pool_padding,
            ceil_mode=spec.ceil_mode, return_indices=True,
        )  # fmt: skip
        centred_out = pooled - (sign * mean)[:, None, None]  # sign * (x - mean) at the maxima
        abs_scale = (sign * scale)[:, None, None]
        if beta is None:
            y = centred_out * abs_scale
        else:
            y = torch.addcmul(beta[:, None, None], centred_out, abs_scale)
        if spec.relu:
            y = y.relu_()
        ctx.save_for_backward(patches, weight, gamma, h, idx, centred_out, y, mean_p, cov_w,
                              rstd, scale, sign)  # fmt: skip
        ctx.spec = spec
        ctx.has = (bias is not None, beta is not None)
        return y.contiguous()

    @staticmethod
    def backward(ctx, gy: Tensor):
        if torch.is_grad_enabled():  # create_graph=True: a derivative of this one is wanted
            raise RuntimeError(
                "stem_block is first order: its backward pass cannot be differentiated again. "
                "Networks call it only in passes without twice=True (PerTaskNet); pass "
                "twice=True for a pass whose gradient is differentiated."
            )
        patches, weight, gamma, h, idx, centred_out, y, mean_p, cov_w, rstd, scale, sign = (
            ctx.saved_tensors
        )
        spec = ctx.spec
        has_bias, has_beta = ctx.has
        c = weight.shape[0]
        g = gy.contiguous(memory_format=torch.channels_last)
        if spec.relu:
            g = torch.ops.aten.threshold_backward(g, y, 0.0)  # keeps the layout
        flat = g.permute(0, 2, 3, 1).reshape(-1, c)  # a view: g is channels-last
        g_t = flat.sum(0)
        g_abs = torch.linalg.vecdot(flat, centred_out.permute(0, 2, 3, 1).reshape(-1, c), dim=0)
        g_pool = g * (sign * scale)[:, None, None]
        g_h = torch.ops.aten.max_pool2d_with_indices_backward(
            g_pool, h, list(spec.pool_kernel), list(spec.pool_stride), list(spec.pool_padding),
            [1, 1], spec.ceil_mode, idx,
        )  # fmt: skip
        g_h = g_h.permute(0, 2, 3, 1).reshape(-1, c)  # [N*L, C]
        g_w = (g_h.T @ patches) * sign[:, None]  # through the convolution (without its bias)
        # through the statistics: y = sign * scale * (pooled - sign * mean) + beta
        g_mean = -scale * g_t
        g_scale = sign * g_abs
        g_rstd = g_scale if gamma is None else g_scale * gamma
        g_var = -0.5 * g_rstd * rstd.pow(3)
        g_w = g_w + torch.outer(g_mean, mean_p) + 2.0 * g_var[:, None] * cov_w
        g_gamma = None if gamma is None else g_scale * rstd
        # The bias's two paths (the convolution, the mean) cancel exactly: batch norm removes it.
        g_bias = torch.zeros_like(g_t) if has_bias else None
        return (None, g_w.view_as(weight), g_bias, g_gamma, g_t if has_beta else None,
                None, None)  # fmt: skip


def _statistics(
    ref: Tensor, w: Tensor, gamma: Tensor | None, eps: float
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per task, batch norm's statistics of the convolution's output from its input patches.

    Args:
        ref: ``[T, M, K]`` the patches the statistics are taken over.
        w: ``[T, C, K]`` the convolution's weights; ``gamma``: ``[T, C]`` or None.

    Returns:
        ``mean_p`` (``[T, K]``, the patches' mean ``m``), ``cov_w`` (``[T, C, K]``, ``W S``),
        ``mean`` (``[T, C]``, ``W m``: without the convolution's bias, which ``x - mean`` does
        not depend on), ``rstd`` (``(diag(W S W^T) + eps)^-1/2``), ``scale`` (``gamma * rstd``)
        and ``sign`` (its sign as +-1, no gradient; 0 counts as +1).
    """
    mean_p = ref.mean(1)
    centred = ref - mean_p[:, None]
    cov = torch.bmm(centred.transpose(1, 2), centred) / ref.shape[1]  # [T, K, K]
    mean = torch.bmm(w, mean_p[:, :, None]).squeeze(2)
    cov_w = torch.bmm(w, cov)
    rstd = torch.rsqrt((cov_w * w).sum(2) + eps)
    scale = rstd if gamma is None else gamma * rstd
    sign = torch.where(scale.detach() >= 0, 1.0, -1.0)
    return mean_p, cov_w, mean, rstd, scale, sign


def _patches(x: Tensor, spec: StemSpec) -> Tensor:
    """``[N*Ho*Wo, C_in*k_h*k_w]``: the convolution's input patches, in ``F.unfold``'s order."""
    cin = x.shape[1]
    (kh, kw), (sh, sw) = spec.kernel, spec.stride
    if spec.dilation == (1, 1):  # one copy of a strided view
        ph, pw = spec.padding
        win = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
        win = win.unfold(2, kh, sh).unfold(3, kw, sw)  # [N, C_in, Ho, Wo, k_h, k_w]
        return win.permute(0, 2, 3, 1, 4, 5).reshape(-1, cin * kh * kw)
    cols = F.unfold(x, spec.kernel, spec.dilation, spec.padding, spec.stride)  # [N, K, L]
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _out_size(size: int, spec: StemSpec, d: int) -> int:
    span = spec.dilation[d] * (spec.kernel[d] - 1) + 1
    return (size + 2 * spec.padding[d] - span) // spec.stride[d] + 1


def stem_tasks(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    gamma: Tensor | None,
    beta: Tensor | None,
    spec: StemSpec,
    stats_rows: int | None = None,
) -> Tensor:
    """The same block for ``T`` tasks with their own parameters, in differentiable operations
    (autograd differentiates it to any order: the support passes of second-order MAML).

    Args:
        x: ``[T, N, C_in, H, W]`` inputs, not differentiated.
        weight: ``[T, C, C_in, k_h, k_w]``; ``bias``, ``gamma``, ``beta``: ``[T, C]`` or None.

    Returns:
        ``[N, T*C, Hp, Wp]`` in channels-last layout: the grouped layout of
        :class:`~manytask.meta.functional.GroupedNet` (task-major channels).

    Under autocast the product and the pool run in the autocast dtype and the statistics in
    fp32 from the fp32 patches; the result has the product's dtype.
    """
    if x.requires_grad:
        raise ValueError("stem_tasks: its input is not differentiated (image data only)")
    t, n = x.shape[:2]
    c = weight.shape[1]
    ho = _out_size(x.shape[3], spec, 0)
    wo = _out_size(x.shape[4], spec, 1)
    w = weight.reshape(t, c, -1)
    with torch.autocast(x.device.type, enabled=False):
        patches = _patches(x.flatten(0, 1), spec).view(t, n * ho * wo, -1)  # [T, M, K]
        precise = patches.dtype in (torch.float32, torch.float64)
        p = patches if precise else patches.float()  # statistics in fp32 at least
        ref = p if stats_rows is None else p[:, : stats_rows * ho * wo]
        _, _, mean, _, scale, sign = _statistics(ref, w.to(p.dtype), gamma, spec.eps)
        if bias is not None:
            mean = mean + bias * 0  # x - mean does not depend on the bias: a zero derivative
        sign = sign.to(w.dtype)
    # sign * (x - b): [T, M, C] is [T*N, Ho, Wo, C], channels-last
    h = torch.bmm(patches, (w * sign[:, :, None]).transpose(1, 2))  # autocast applies
    h = h.view(t * n, ho, wo, c).permute(0, 3, 1, 2)
    pooled = F.max_pool2d(h, spec.pool_kernel, spec.pool_stride, spec.pool_padding,
                          ceil_mode=spec.ceil_mode)  # fmt: skip
    hp, wp = pooled.shape[2:]
    act = pooled.dtype

    def per(v: Tensor) -> Tensor:  # a [T, C] coefficient over [T, N, Hp, Wp, C]
        return v.to(act)[:, None, None, None, :]

    z = pooled.permute(0, 2, 3, 1).view(t, n, hp, wp, c)  # a view: pooled is channels-last
    y = (z - per(sign * mean)) * per(sign * scale)  # |scale| * sign * (x - mean)
    if beta is not None:
        y = y + per(beta)
    if spec.relu:
        y = F.relu(y)
    # [T, N, Hp, Wp, C] -> memory [N, Hp, Wp, T, C] = [N, T*C, Hp, Wp] channels-last
    y = y.permute(1, 2, 3, 0, 4).reshape(n, hp, wp, t * c)
    return y.permute(0, 3, 1, 2)
