"""Networks as functions of per-task parameters, and the inner loop shared by MAML and kin.

Optimisation-based meta-learners adapt a copy of the parameters to every task of a meta-batch:
``phi_i = theta - alpha * grad_theta L(theta, D_i^tr)`` (Finn et al. 2017, eq. 1), repeated for
a few steps, then predict the task's queries with ``phi_i``. Here the copies are not modules:
they are parameter dicts ``{name: Tensor[T, *shape]}`` with one row per task, and a network
is a *function* ``net(params, x [T, B, *in]) -> [T, B, D]`` over them. Two such functions:

- :class:`GroupedNet` runs every task of the batch in one call. A convolution with per-task
  weights is one grouped convolution (the ``T`` tasks are the groups, in channels-last
  layout); a batch norm over ``[B, T*C, H, W]`` normalises each task's channels with that
  task's own statistics; a linear layer is one batched matrix product. Everything is exact
  (the same arithmetic as one network per task), so it is compared with the per-task loop in
  the tests, batch norm on, to 1e-5 - unlike ``torch.func.vmap`` over tasks, whose
  second-order gradient through batch norm in batch-statistics mode is wrong on torch 2.13.
  It understands the layers of the shipped encoders (``Conv2d``, ``BatchNorm1d/2d``,
  ``ReLU``, ``Tanh``, ``MaxPool2d``, ``AvgPool2d``, ``Flatten``, ``Linear``, ``Identity``,
  ``Dropout(p=0)``) in ``nn.Sequential`` containers or modules with ``stages()``.
- :class:`PerTaskNet` runs the same layers task by task in NCHW layout: the per-task loops'
  kernels and arithmetic, with a ReLU moved after its max-pool and the max-pool in
  channels-last layout (both exact); the fastest fp32 choice on a CPU (docs/RESULTS.md).
- :class:`LoopNet` calls ``torch.func.functional_call`` on the module once per task: any
  module works, at the speed of a Python loop.

On the CPU the first two run a first block ``Conv2d, BatchNorm2d, [ReLU,] MaxPool2d`` whose
convolution sees few values per output (``C_in * k_h * k_w <= 32``: Conv4 on Omniglot's one
channel) as one operation (meta/_stem.py): batch statistics from the input patches'
covariance, the pool before the affine map, the convolution as one matrix product. The same
values and derivatives (tested in float64 to second order), without batch norm's passes over
the largest activation.

Batch norm (``batch_norm=``) is an explicit choice, the same in training and evaluation:

- ``"transductive"`` (MAML's and Reptile's reference code): every forward pass normalises
  with the statistics of the batch it is given - the task's support set while adapting, the
  task's query set when predicting. A query's prediction depends on the other queries of its
  task (never on other tasks). Running statistics are never used or updated.
- ``"support"``: the query set is normalised with the statistics of the task's support set
  (passed through the same parameters), so each query is predicted on its own
  ("MetaBN" in Bronskill et al. 2020, "TaskNorm"). Needs :class:`GroupedNet` or
  :class:`PerTaskNet`.

:func:`adapt` is the inner loop: plain gradient steps on the summed support losses of the
tasks, with a scalar or per-parameter learning rate, second order (the graph of every step is
kept for the meta-gradient), first order (the steps' gradients are constants) or without any
meta-gradient (evaluation), optionally checkpointed (each step recomputed in the backward
pass instead of being stored).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from manytask.meta._autograd import vjp
from manytask.meta._batch_norm import batch_norm_twice
from manytask.meta._stem import StemSpec, stem_block, stem_tasks
from manytask.meta.parallel import in_worker
from manytask.nn.mlp import Flatten as RawFlatten

__all__ = [
    "BatchNormMode",
    "GroupedNet",
    "LoopNet",
    "TaskNet",
    "UnsupportedLayer",
    "adapt",
    "per_task",
    "task_loss",
]

Params = dict[str, Tensor]
BatchNormMode = Literal["transductive", "support"]


class UnsupportedLayer(TypeError):
    """A module :class:`GroupedNet` cannot run per task (use :class:`LoopNet` for it)."""


class TaskNet(Protocol):
    """A network over a batch of tasks with per-task parameters.

    ``net(params, x, stats_rows=None, *, twice=False)``: ``params`` maps names to
    ``[T, *shape]`` tensors, ``x`` is ``[T, B, *in]``; returns ``[T, B, D]``. With
    ``stats_rows=k``, batch norm uses the statistics of the first ``k`` examples of each task
    (the support set) for all ``B``. ``twice=True`` says the graph will be differentiated twice
    (a second-order inner step), so the network may pick ops with a cheaper double backward.
    """

    names: tuple[str, ...]

    def __call__(
        self,
        params: Mapping[str, Tensor],
        x: Tensor,
        stats_rows: int | None = None,
        *,
        twice: bool = False,
    ) -> Tensor: ...


def per_task(params: Mapping[str, Tensor], tasks: int) -> Params:
    """Shared parameters ``{name: [*shape]}`` as per-task rows ``{name: [T, *shape]}``.

    The rows are views (``expand``) of the shared tensors, so gradients with respect to them
    are per-task gradients and flow back to the shared tensor summed over tasks.
    """
    return {n: p.unsqueeze(0).expand(tasks, *p.shape) for n, p in params.items()}


# -- GroupedNet: one call for every task ----------------------------------------------------------


@dataclass(frozen=True)
class _Conv:
    weight: str
    bias: str | None
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]


@dataclass(frozen=True)
class _Norm:
    weight: str | None
    bias: str | None
    eps: float


@dataclass(frozen=True)
class _Linear:
    weight: str
    bias: str | None


@dataclass(frozen=True)
class _Pool:
    kind: Literal["max", "avg"]
    kernel: int | tuple[int, ...]
    stride: int | tuple[int, ...] | None
    padding: int | tuple[int, ...]
    ceil_mode: bool


@dataclass(frozen=True)
class _Act:
    fn: Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class _Flatten:
    pass


_Op = _Conv | _Norm | _Linear | _Pool | _Act | _Flatten


def _compile(module: nn.Module, prefix: str, ops: list[_Op]) -> None:
    """Append the ops of ``module`` (its parameters named with ``prefix``) to ``ops``."""
    name = prefix.rstrip(".") or type(module).__name__
    stages = getattr(module, "stages", None)
    if isinstance(module, nn.Sequential):
        for child_name, child in module.named_children():
            _compile(child, f"{prefix}{child_name}.", ops)
        return
    if callable(stages) and not isinstance(module, nn.Sequential):
        # The backbone contract (manytask.nn.backbones): module(x) == flatten(stages(...)(x)).
        # The stages are found by identity among the children, for their parameter names.
        names = {id(m): n for n, m in module.named_modules()}
        for stage in stages():
            if id(stage) not in names:
                raise UnsupportedLayer(f"{name}: a stage is not a sub-module of it")
            _compile(stage, f"{prefix}{names[id(stage)]}.", ops)
        ops.append(_Flatten())
        return
    if isinstance(module, nn.Conv2d):
        if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise UnsupportedLayer(f"{name}: only Conv2d with groups=1, numeric zero padding")
        ops.append(
            _Conv(
                f"{prefix}weight",
                f"{prefix}bias" if module.bias is not None else None,
                tuple(module.stride),
                tuple(module.padding),
                tuple(module.dilation),
            )
        )
    elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        affine = module.affine
        ops.append(
            _Norm(
                f"{prefix}weight" if affine else None,
                f"{prefix}bias" if affine else None,
                float(module.eps),
            )
        )
    elif isinstance(module, nn.Linear):
        ops.append(_Linear(f"{prefix}weight", f"{prefix}bias" if module.bias is not None else None))
    elif isinstance(module, nn.MaxPool2d):
        if module.dilation not in (1, (1, 1)) or module.return_indices:
            raise UnsupportedLayer(f"{name}: MaxPool2d with dilation or indices")
        ops.append(
            _Pool("max", module.kernel_size, module.stride, module.padding, module.ceil_mode)
        )
    elif isinstance(module, nn.AvgPool2d):
        if not module.count_include_pad or module.divisor_override is not None:
            raise UnsupportedLayer(f"{name}: AvgPool2d with count_include_pad=False or a divisor")
        ops.append(
            _Pool("avg", module.kernel_size, module.stride, module.padding, module.ceil_mode)
        )
    elif isinstance(module, nn.ReLU):
        ops.append(_Act(F.relu))  # never in place: the inner loop differentiates through it
    elif isinstance(module, nn.Tanh):
        ops.append(_Act(torch.tanh))
    elif isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise UnsupportedLayer(f"{name}: only Flatten(start_dim=1, end_dim=-1)")
        ops.append(_Flatten())
    elif isinstance(module, nn.Identity) or (isinstance(module, nn.Dropout) and module.p == 0):
        pass
    elif isinstance(module, RawFlatten):
        ops.append(_Flatten())  # raw inputs as features
    else:
        raise UnsupportedLayer(
            f"{name}: {type(module).__name__} has no per-task grouped form "
            "(supported: Conv2d, BatchNorm1d/2d, Linear, ReLU, Tanh, MaxPool2d, AvgPool2d, "
            "Flatten, Identity, Dropout(p=0), in Sequential containers or stages())"
        )


class GroupedNet:
    """``module`` run over ``T`` tasks in one call, each task with its own parameters.

    Args:
        module: the network (an encoder followed by its head, say, in an ``nn.Sequential``).
        prefix: put before the module's parameter names (``"encoder."`` when the parameter
            dict is the one of a learner holding the module as ``encoder``).
        channels_last: keep image activations in channels-last layout (faster grouped
            convolutions on CPU oneDNN and on GPU tensor cores).
        pool_before_relu: run each ``ReLU, MaxPool`` pair as ``MaxPool, ReLU`` (exact: both are
            monotone, and ReLU then touches a quarter of the values); always done under
            autocast.

    Raises:
        UnsupportedLayer: ``module`` holds a layer without a grouped form.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
        >>> g = GroupedNet(net)
        >>> params = per_task(dict(net.named_parameters()), tasks=3)
        >>> g(params, torch.randn(3, 5, 1, 6, 6)).shape
        torch.Size([3, 5, 64])
    """

    def __init__(
        self,
        module: nn.Module,
        prefix: str = "",
        channels_last: bool = True,
        *,
        pool_before_relu: bool = False,
    ) -> None:
        ops: list[_Op] = []
        _compile(module, prefix, ops)
        self.ops = _pool_before_relu(ops) if pool_before_relu else tuple(ops)
        # Under autocast a ReLU runs after its max-pool whatever pool_before_relu says (exact;
        # the fp32 order is kept so that fp32 results round as they always have).
        self._autocast_ops = _pool_before_relu(ops)
        self.channels_last = channels_last
        own = {prefix + n: p for n, p in module.named_parameters()}
        used = [n for op in self.ops for n in _param_names(op)]
        missing = [n for n in used if n not in own]
        if missing:
            raise UnsupportedLayer(f"parameters {missing} of the compiled network are not found")
        self.names = tuple(used)
        unused = sorted(set(own) - set(used))
        if unused:
            raise UnsupportedLayer(f"parameters {unused} are not used by any supported layer")
        self._stem = _stem_spec(self._autocast_ops, own)

    def __repr__(self) -> str:
        return f"GroupedNet({len(self.ops)} ops, channels_last={self.channels_last})"

    def __call__(
        self,
        params: Mapping[str, Tensor],
        x: Tensor,
        stats_rows: int | None = None,
        *,
        twice: bool = False,
    ) -> Tensor:
        t, b = x.shape[:2]
        h = x
        conv = x.dim() == 5  # images [T, B, C, H, W] -> the grouped layout [B, T*C, H, W]
        ops = self._autocast_ops if torch.is_autocast_enabled(x.device.type) else self.ops
        if self._stem is not None and _stem_applies(x, 5):
            # The first block (conv with few inputs per output, batch norm, max-pool, ReLU)
            # as one product and a pool before the affine map (meta/_stem.py).
            spec, taken = self._stem
            h = stem_tasks(x, *_stem_params(self._autocast_ops, params), spec, stats_rows)
            if not self.channels_last:
                h = h.contiguous()
            ops = self._autocast_ops[taken:]
        elif conv:
            h = x.transpose(0, 1).reshape(b, t * x.shape[2], *x.shape[3:])
            if self.channels_last:
                h = h.contiguous(memory_format=torch.channels_last)
        for op in ops:
            if isinstance(op, _Conv):
                if not conv:
                    raise UnsupportedLayer("Conv2d after the features were flattened")
                w = params[op.weight]
                bias = params[op.bias].reshape(-1) if op.bias is not None else None
                h = F.conv2d(
                    h, w.reshape(-1, *w.shape[2:]), bias, op.stride, op.padding, op.dilation, t
                )
            elif isinstance(op, _Norm):
                h = _batch_norm(h, op, params, t, conv, stats_rows, twice)
            elif isinstance(op, _Pool):
                h = _pool(h, op)
            elif isinstance(op, _Act):
                h = op.fn(h)
            elif isinstance(op, _Flatten):
                if conv:  # [B, T*C, h, w] -> [T, B, C*h*w], each example flattened as (C, h, w)
                    h = h.reshape(b, t, -1).transpose(0, 1)
                    conv = False
                else:
                    h = h.flatten(2)
            else:  # _Linear: one batched product [T, B, in] x [T, in, out]
                if conv:
                    raise UnsupportedLayer("Linear on image activations: add a Flatten first")
                w = params[op.weight]
                if op.bias is None:
                    h = torch.bmm(h, w.transpose(1, 2))
                else:
                    h = torch.baddbmm(params[op.bias].unsqueeze(1), h, w.transpose(1, 2))
        if conv:
            h = h.reshape(b, t, -1).transpose(0, 1)
        return h


# -- PerTaskNet: the same layers, one task at a time -----------------------------------------------


class PerTaskNet:
    """The layers :class:`GroupedNet` understands, run task by task in NCHW layout.

    Every task is one ordinary call of each layer (a convolution with groups=1, a batch norm
    over the task's own batch, a max-pool): the kernels and the arithmetic of a per-task loop
    over the module, as learn2learn, higher or ``torch.func`` run it, without the cost of
    ``functional_call`` (which swaps the module's tensors on every call). Three exact changes
    make it faster on a CPU:

    - a ReLU followed by a max-pool runs after it: both are monotone, so the values and the
      gradients are the same, and the ReLU and its backward touch a quarter of the values;
    - max-pooling (on the CPU) finds its maxima in channels-last layout, whose kernel is
      vectorised over channels (3-4x faster than the NCHW one here, though the layout copies
      take back most of that), and the backward pass is the NCHW one from the saved indices.
      Where a window holds equal maxima (a blank region of a binary image, say) its gradient
      goes to one of them, as with any max-pool; which one follows the channels-last kernel,
      as in :class:`GroupedNet`.
    - a first block with few input values per output (Conv4 on one channel) runs as one
      operation (meta/_stem.py; see the module docstring), first order with its backward
      written out where the pass is differentiated once.

    Args:
        module: the network (see :class:`GroupedNet` for the supported layers).
        prefix: put before the module's parameter names.

    Raises:
        UnsupportedLayer: ``module`` holds a layer without a grouped form.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
        >>> params = per_task(dict(net.named_parameters()), tasks=3)
        >>> PerTaskNet(net)(params, torch.randn(3, 5, 1, 6, 6)).shape
        torch.Size([3, 5, 64])
    """

    def __init__(self, module: nn.Module, prefix: str = "") -> None:
        self._net = GroupedNet(module, prefix, channels_last=False, pool_before_relu=True)
        self.names = self._net.names

    def __repr__(self) -> str:
        return f"PerTaskNet({len(self._net.ops)} ops)"

    def __call__(
        self,
        params: Mapping[str, Tensor],
        x: Tensor,
        stats_rows: int | None = None,
        *,
        twice: bool = False,
    ) -> Tensor:
        rows = {n: p.unbind(0) for n, p in params.items()}  # one UnbindBackward per tensor
        outs = [
            self._one({n: r[i] for n, r in rows.items()}, x[i], stats_rows, twice)
            for i in range(x.shape[0])
        ]
        return torch.stack(outs)

    def _one(
        self, p: Mapping[str, Tensor], h: Tensor, stats_rows: int | None, twice: bool
    ) -> Tensor:
        """One task: ``p`` its own parameters (no task dimension), ``h`` its batch ``[B, *in]``.

        The layers are called on the parameters as they are, without the reshapes of the
        grouped layout, which would each add a node to the graph differentiated twice.
        """
        conv = h.dim() == 4
        ops = self._net.ops
        stem = self._net._stem  # its ops are PerTaskNet's: pool_before_relu=True
        if stem is not None and _stem_applies(h, 4):
            spec, taken = stem
            w, bias, gamma, beta = _stem_params(ops, p)
            if _first_order_stem(h, twice):  # its backward written out: ~1.8x faster
                h = stem_block(h, w, bias, gamma, beta, spec, stats_rows)
            else:  # differentiable to any order; [N, C, Hp, Wp] channels-last -> NCHW
                one = _with_task_dim
                h = stem_tasks(h[None], w[None], one(bias), one(gamma), one(beta), spec,
                               stats_rows).contiguous()  # fmt: skip
            ops = ops[taken:]
        for op in ops:
            if isinstance(op, _Conv):
                if not conv:
                    raise UnsupportedLayer("Conv2d after the features were flattened")
                bias = p[op.bias] if op.bias is not None else None
                h = F.conv2d(h, p[op.weight], bias, op.stride, op.padding, op.dilation)
            elif isinstance(op, _Norm):
                h = _task_norm(h, op, p, stats_rows, twice)
            elif isinstance(op, _Pool):
                cpu_max = op.kind == "max" and h.device.type == "cpu"
                h = _NHWCMaxPool.apply(h, op) if cpu_max else _pool(h, op)
            elif isinstance(op, _Act):
                h = op.fn(h)
            elif isinstance(op, _Flatten):
                h = h.flatten(1)
                conv = False
            else:
                if conv:
                    raise UnsupportedLayer("Linear on image activations: add a Flatten first")
                h = F.linear(h, p[op.weight], p[op.bias] if op.bias is not None else None)
        return h.flatten(1) if conv else h


#: The most input values per output (``C_in * k_h * k_w``) for which the first block runs as
#: one operation, ``stem_block`` or ``stem_tasks`` (its statistics come from a ``K x K``
#: covariance).
STEM_MAX_PATCH = 32


def _stem_spec(ops: Sequence[_Op], own: Mapping[str, Tensor]) -> tuple[StemSpec, int] | None:
    """The spec of a first ``Conv2d, BatchNorm2d, MaxPool2d[, ReLU]`` block with small patches
    (``ReLU, MaxPool`` already swapped), and how many ops it covers; None if there is none."""
    if len(ops) < 3:
        return None
    c, n, pool = ops[0], ops[1], ops[2]
    if not (isinstance(c, _Conv) and isinstance(n, _Norm) and isinstance(pool, _Pool)):
        return None
    weight = own[c.weight]
    if pool.kind != "max" or weight.dim() != 4 or weight[0].numel() > STEM_MAX_PATCH:
        return None
    relu = len(ops) > 3 and isinstance(ops[3], _Act) and ops[3].fn is F.relu
    pair = torch.nn.modules.utils._pair
    spec = StemSpec(
        kernel=(weight.shape[2], weight.shape[3]),
        stride=pair(c.stride),
        padding=pair(c.padding),
        dilation=pair(c.dilation),
        eps=n.eps,
        pool_kernel=pair(pool.kernel),
        pool_stride=pair(pool.kernel if pool.stride is None else pool.stride),
        pool_padding=pair(pool.padding),
        ceil_mode=pool.ceil_mode,
        relu=relu,
    )
    return spec, 4 if relu else 3


def _stem_params(
    ops: Sequence[_Op], params: Mapping[str, Tensor]
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """The first block's convolution weight and bias and batch norm's gamma and beta."""
    c, n = ops[0], ops[1]
    assert isinstance(c, _Conv) and isinstance(n, _Norm)
    return (
        params[c.weight],
        params[c.bias] if c.bias is not None else None,
        params[n.weight] if n.weight is not None else None,
        params[n.bias] if n.bias is not None else None,
    )


def _with_task_dim(v: Tensor | None) -> Tensor | None:
    return v[None] if v is not None else None


def _stem_applies(x: Tensor, image_dims: int) -> bool:
    """Whether the first block may run as one stem (meta/_stem.py): images (``image_dims``
    dimensions: 4 for one task's batch, 5 for every task's) on the CPU (where it was
    measured), which are not differentiated."""
    return x.dim() == image_dims and x.device.type == "cpu" and not x.requires_grad


def _first_order_stem(h: Tensor, twice: bool) -> bool:
    """Whether :func:`~manytask.meta._stem.stem_block` (first order, fp32/fp64) serves this pass
    rather than :func:`~manytask.meta._stem.stem_tasks` (any order, any dtype)."""
    full = h.dtype in (torch.float32, torch.float64)
    return not twice and full and not torch.is_autocast_enabled(h.device.type)


def _pool(h: Tensor, op: _Pool) -> Tensor:
    pool = F.max_pool2d if op.kind == "max" else F.avg_pool2d
    return pool(h, op.kernel, op.stride, op.padding, ceil_mode=op.ceil_mode)


def _task_norm(
    h: Tensor, op: _Norm, p: Mapping[str, Tensor], stats_rows: int | None, twice: bool
) -> Tensor:
    """Batch norm of one task's ``[B, C, *]`` batch (the per-task form of :func:`_batch_norm`)."""
    w = p[op.weight] if op.weight is not None else None
    bias = p[op.bias] if op.bias is not None else None
    if stats_rows is None:
        if twice and h.device.type == "cpu":
            return batch_norm_twice(h, w, bias, op.eps)  # see _batch_norm
        return F.batch_norm(h, None, None, w, bias, training=True, eps=op.eps)
    dims = [0, *range(2, h.dim())]
    return _normalise(h, h[:stats_rows], dims, [1, -1] + [1] * (h.dim() - 2), w, bias, op.eps)


def _pool_before_relu(ops: Sequence[_Op]) -> tuple[_Op, ...]:
    """``ReLU, MaxPool`` pairs swapped to ``MaxPool, ReLU`` (exact: ReLU is monotone)."""
    out = list(ops)
    for i in range(len(out) - 1):
        a, b = out[i], out[i + 1]
        if isinstance(a, _Act) and a.fn is F.relu and isinstance(b, _Pool) and b.kind == "max":
            out[i], out[i + 1] = b, a
    return tuple(out)


class _NHWCMaxPool(torch.autograd.Function):
    """``F.max_pool2d`` of an NCHW tensor, its maxima found in channels-last layout (CPU).

    The indices of the maxima are positions within each ``H x W`` plane, whatever the layout,
    so the backward pass is the ordinary NCHW one (``max_pool2d_with_indices_backward``, a
    differentiable operation: second-order MAML differentiates through it).
    """

    @staticmethod
    def forward(ctx, h: Tensor, op: _Pool) -> Tensor:
        nhwc = h.contiguous(memory_format=torch.channels_last)
        out, idx = F.max_pool2d(nhwc, op.kernel, op.stride, op.padding, ceil_mode=op.ceil_mode,
                                return_indices=True)  # fmt: skip
        idx = idx.contiguous()
        ctx.save_for_backward(h, idx)
        ctx.op = op
        ctx.mark_non_differentiable(idx)
        return out.contiguous()

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, idx = ctx.saved_tensors
        op = ctx.op
        pair = torch.nn.modules.utils._pair
        stride = op.kernel if op.stride is None else op.stride
        g = torch.ops.aten.max_pool2d_with_indices_backward(
            grad.contiguous(), h, pair(op.kernel), pair(stride), pair(op.padding), [1, 1],
            op.ceil_mode, idx,
        )  # fmt: skip
        return g, None


def _param_names(op: _Op) -> list[str]:
    if isinstance(op, _Conv | _Linear | _Norm):
        return [n for n in (op.weight, op.bias) if n is not None]
    return []


def _batch_norm(
    h: Tensor,
    op: _Norm,
    params: Mapping[str, Tensor],
    t: int,
    conv: bool,
    stats_rows: int | None,
    twice: bool,
) -> Tensor:
    """Batch norm with each task's own statistics (training-mode arithmetic, biased variance)."""
    w = params[op.weight] if op.weight is not None else None
    bias = params[op.bias] if op.bias is not None else None
    cl = conv and stats_rows is None and h.is_contiguous(memory_format=torch.channels_last)
    cpu = h.device.type == "cpu"
    precise = cpu and h.dtype in (torch.float32, torch.float64)
    if twice and conv and stats_rows is None and cpu and not (cl and precise):
        # A second-order pass on the CPU: F.batch_norm's values and single backward, with a
        # double backward of a few fused passes instead of autograd's general formula (a fifth
        # of a second-order MAML step; meta/_batch_norm.py). [B, T*C, H, W]: the channels are
        # exactly (task, channel) pairs. Not for fp32 channels-last tensors (next branch).
        return batch_norm_twice(
            h,
            w.reshape(-1) if w is not None else None,
            bias.reshape(-1) if bias is not None else None,
            op.eps,
        )
    if cl and (twice or precise):
        # The same arithmetic as elementary ops on the [B*H*W, T*C] view of the channels-last
        # tensor. On CPU, fp32 passes use them: F.batch_norm on a channels-last CPU tensor
        # accumulates its statistics and its backward sums row after row, 20-50x the rounding
        # error of these column sums (the weight gradient 1.6e-5 relative vs 3e-7 at
        # 25 x 28 x 28 rows), which 5 inner steps of MAML amplified to a meta-gradient 8% off
        # the exact one (benchmarks/maml_precision.py); the price is a slower single backward
        # (docs/RESULTS.md). Their double backward is also ~4x faster than F.batch_norm's, so
        # second-order passes on GPUs use them too. Under bf16 autocast (an approximate mode
        # whose meta-gradient is ~10% off anyway) and on GPUs, F.batch_norm keeps the single
        # passes.
        c = h.shape[1]
        flat = h.permute(0, 2, 3, 1).reshape(-1, c)
        centred = flat - flat.mean(0)
        scale = torch.rsqrt(centred.pow(2).mean(0) + op.eps)
        if w is not None:
            scale = scale * w.reshape(-1)
        flat = centred * scale
        if bias is not None:
            flat = flat + bias.reshape(-1)
        return flat.view(h.shape[0], *h.shape[2:], c).permute(0, 3, 1, 2)
    if conv and stats_rows is None:
        # [B, T*C, H, W]: the channels of F.batch_norm are exactly (task, channel) pairs.
        return F.batch_norm(
            h,
            None,
            None,
            w.reshape(-1) if w is not None else None,
            bias.reshape(-1) if bias is not None else None,
            training=True,
            eps=op.eps,
        )
    if conv:  # statistics of the first stats_rows examples (the support set) for all of them
        dims = [0, *range(2, h.dim())]
        return _normalise(h, h[:stats_rows], dims, [1, -1] + [1] * (h.dim() - 2), w, bias, op.eps)
    ref = h if stats_rows is None else h[:, :stats_rows]  # [T, B, F]
    return _normalise(h, ref, [1], [t, 1, -1], w, bias, op.eps)


def _normalise(
    h: Tensor,
    ref: Tensor,
    dims: list[int],
    shape: list[int],
    w: Tensor | None,
    bias: Tensor | None,
    eps: float,
) -> Tensor:
    """``h`` normalised with the biased statistics of ``ref`` over ``dims``, then scaled and
    shifted by ``w`` and ``bias`` reshaped to ``shape``."""
    mean = ref.mean(dims, keepdim=True)
    var = ref.var(dims, unbiased=False, keepdim=True)
    out = (h - mean) * torch.rsqrt(var + eps)
    if w is not None:
        out = out * w.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


# -- LoopNet: any module, one task at a time -------------------------------------------------------


class LoopNet:
    """``module`` called once per task with ``torch.func.functional_call``.

    Batch-norm layers run on batch statistics whatever the module's mode (the transductive
    setting): for the call they are put in training mode and given throwaway copies of their
    running statistics, so the module's own buffers never move.

    Args:
        module: any network ``[B, *in] -> [B, D]``.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        >>> params = per_task(dict(net.named_parameters()), tasks=2)
        >>> LoopNet(net)(params, torch.randn(2, 6, 3)).shape
        torch.Size([2, 6, 4])
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.names = tuple(n for n, _ in module.named_parameters())
        self._copies: dict[int, nn.Module] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"module": self.module, "names": self.names}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._copies, self._lock = {}, threading.Lock()

    def _module_here(self) -> nn.Module:
        """The module to call in this thread.

        ``functional_call`` swaps the module's tensors for the given ones while it runs, and
        batch statistics switch its norms to training mode: neither is safe with two threads
        on one module. Task-worker threads (:mod:`manytask.meta.parallel`) therefore each call
        their own copy of the structure (its tensors are never used: every parameter and
        buffer is passed in).
        """
        if not in_worker():
            return self.module
        key = threading.get_ident()
        with self._lock:
            if key not in self._copies:
                self._copies[key] = copy.deepcopy(self.module)
            return self._copies[key]

    def __repr__(self) -> str:
        return f"LoopNet({type(self.module).__name__})"

    def __call__(
        self,
        params: Mapping[str, Tensor],
        x: Tensor,
        stats_rows: int | None = None,
        *,
        twice: bool = False,
    ) -> Tensor:
        if stats_rows is not None:
            raise ValueError(
                "batch_norm='support' needs the grouped network (backend='grouped'); the "
                "per-task loop only does transductive batch norm"
            )
        outs = []
        module = self._module_here()
        with _batch_statistics(module):
            for i in range(x.shape[0]):
                buffers = {n: b.clone() for n, b in self.module.named_buffers()}
                task = {n: p[i] for n, p in params.items()}
                outs.append(torch.func.functional_call(module, (task, buffers), (x[i],)))
        return torch.stack(outs)


@contextmanager
def _batch_statistics(module: nn.Module) -> Iterator[None]:
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes = [m.training for m in norms]
    try:
        for m in norms:
            m.train(True)
        yield
    finally:
        for m, mode in zip(norms, modes, strict=True):
            m.train(mode)


# -- the inner loop -------------------------------------------------------------------------------


def task_loss(pred: Tensor, target: Tensor) -> Tensor:
    """The inner-loop loss summed over tasks (each task's loss a mean over its examples).

    Integer ``target [T, B]``: cross-entropy of ``pred [T, B, N]``; real ``target [T, B, out]``:
    squared error. Summing over tasks keeps each task's gradient its own.
    """
    pred = pred.to(torch.promote_types(pred.dtype, torch.float32))  # bf16 logits -> fp32 loss
    if target.is_floating_point():
        return (pred - target).pow(2).mean((1, 2)).sum()
    b = target.shape[1]
    return F.cross_entropy(pred.flatten(0, 1), target.flatten(), reduction="sum") / b


LearningRate = float | Mapping[str, Tensor]


def adapt(
    net: Callable[..., Tensor],
    params: Mapping[str, Tensor],
    names: Sequence[str],
    support_x: Tensor,
    support_y: Tensor,
    *,
    lr: LearningRate,
    steps: int,
    mode: Literal["second_order", "first_order", "none"],
    remat: bool = False,
) -> Params:
    """``steps`` gradient steps on each task's support loss, from per-task ``params``.

    ``phi <- phi - lr * grad_phi L(phi, D^tr)`` for the parameters in ``names`` (the others
    stay as given).

    Args:
        net: ``net(params, x) -> predictions`` over tasks (:class:`GroupedNet`, :class:`LoopNet`
            or a function around one).
        params: per-task parameters ``{name: [T, *shape]}`` (e.g. :func:`per_task` of theta).
        names: the parameters that adapt.
        support_x: ``[T, N*K, *in]``.
        support_y: ``[T, N*K]`` labels or ``[T, K, out]`` targets.
        lr: a scalar, or per-parameter rates ``{name: Tensor}`` broadcastable to ``[T, *shape]``
            (Meta-SGD's learned rates).
        steps: the number of steps (0 returns ``params``).
        mode: ``"second_order"`` keeps the graph of every step (MAML); ``"first_order"`` treats
            each step's gradient as a constant (FOMAML: the meta-gradient is the query gradient
            at ``phi``); ``"none"`` builds no graph to ``params`` at all (evaluation).
        remat: recompute each step in the backward pass instead of storing its activations
            (second order only: less memory, one more forward and backward of the support
            set per step).

    Returns:
        The adapted per-task parameters ``{name: [T, *shape]}``.
    """
    fast = dict(params)
    if mode == "none":
        fast = {n: p.detach() for n, p in fast.items()}
    for _ in range(steps):
        if mode == "none":
            fast = {n: p.detach().requires_grad_(n in names) for n, p in fast.items()}
        if remat and mode == "second_order":
            fast = _remat_step(net, fast, names, support_x, support_y, lr)
        else:
            fast = _step(
                net, fast, names, support_x, support_y, lr, create_graph=mode == "second_order"
            )
    if mode == "none":
        fast = {n: p.detach() for n, p in fast.items()}
    return fast


def _step(
    net: Callable[..., Tensor],
    fast: Params,
    names: Sequence[str],
    support_x: Tensor,
    support_y: Tensor,
    lr: LearningRate,
    *,
    create_graph: bool,
) -> Params:
    with torch.enable_grad():
        loss = task_loss(net(fast, support_x, twice=create_graph), support_y)
        grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=create_graph)
    out = dict(fast)
    for n, g in zip(names, grads, strict=True):
        rate = lr if isinstance(lr, float | int) else lr[n]
        out[n] = fast[n] - rate * g.to(fast[n].dtype)
    return out


def _remat_step(
    net: Callable[..., Tensor],
    fast: Params,
    names: Sequence[str],
    support_x: Tensor,
    support_y: Tensor,
    lr: LearningRate,
) -> Params:
    keys = list(fast)
    rate_names = [] if isinstance(lr, float | int) else list(names)

    def step(flat: Sequence[Tensor], create_graph: bool) -> list[Tensor]:
        state = dict(zip(keys, flat[: len(keys)], strict=True))
        rates = dict(zip(rate_names, flat[len(keys) :], strict=True)) if rate_names else lr
        new = _step(net, state, names, support_x, support_y, rates, create_graph=create_graph)
        return [new[k] for k in names]

    rates = [] if isinstance(lr, float | int) else [lr[n] for n in names]
    adapted = _Recompute.apply(step, len(names), *[fast[k] for k in keys], *rates)
    return {**fast, **dict(zip(names, adapted, strict=True))}


class _Recompute(torch.autograd.Function):
    """One inner step whose activations are not stored: the backward pass runs it again.

    Forward computes the step's values only (no graph). Backward recomputes the step with the
    graph of its gradient (``create_graph=True``) and back-propagates the incoming gradients
    through it, which is the exact second-order vector-Jacobian product. (A hand-written
    Function rather than ``torch.utils.checkpoint``, whose first use imports ~800 modules.)
    """

    @staticmethod
    def forward(ctx, step, count: int, *flat: Tensor):
        ctx.step = step
        ctx.save_for_backward(*flat)
        with torch.enable_grad():
            inputs = [f.detach().requires_grad_(f.requires_grad) for f in flat]
            out = step(inputs, False)
        return tuple(o.detach() for o in out)

    @staticmethod
    def backward(ctx, *grad_out: Tensor):
        flat = ctx.saved_tensors
        with torch.enable_grad():
            inputs = [f.detach().requires_grad_(ctx.needs_input_grad[i + 2])
                      for i, f in enumerate(flat)]  # fmt: skip
            result = vjp(ctx.step(inputs, True), grad_out, inputs)
        return (None, None, *result)
