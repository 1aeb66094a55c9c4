"""Per-task gradients: the Jacobian ``[K, P]`` of K task losses w.r.t. the shared parameters.

Every gradient aggregator starts from ``J``, whose row ``i`` is ``grad_theta_sh L_i``. The
incumbents (LibMTL, torchjd) pay about one backward pass per task for it. Two structures make
it cheaper, and this module uses them:

**Separate mini-batches through a shared trunk** (multi-task classification: each task brings
its own examples, ``forward_tasks`` runs them as one concatenated batch whose rows
``[s_i, e_i)`` belong to task ``i``). Row ``b`` only reaches its own task's loss, so the
gradient of ``L = sum_i L_i`` w.r.t. a layer's output at row ``b`` *is* the gradient of
``L_task(b)``. For a linear layer ``y_b = W a_b + c`` the weight gradient is a sum of
per-example outer products, ``grad_W L_i = sum_{b in task i} (dL/dy_b) a_b^T``, so **one**
backward of ``L`` (for the output gradients ``dL/dy``) plus the layer inputs ``a`` captured in
the forward pass give every row of ``J``: a segment sum of per-example products
(:class:`TaskCapture`; one batched matrix product per ``nn.Linear``, one weight-gradient
convolution per task for ``nn.ConvNd``). The backward does not even form the summed weight
gradients of the shared layers: it stops at their outputs.

It is exact when (the rule :attr:`TaskCapture.reason` checks):

- every shared parameter belongs to an ``nn.Linear``, an ``nn.Conv1d/2d/3d`` (zero padding
  mode), or the affine part of an ``nn.GroupNorm`` / ``nn.LayerNorm`` (normalised per example:
  ``grad_gamma L_i = sum_{b in task i} dL/dy_b * xhat_b``, ``xhat`` recomputed from the captured
  input), and is used only through that module's forward;
- nothing in the shared part couples examples: batch norm in training mode normalises with
  statistics of the whole concatenated batch, so each task's loss depends on every task's
  examples and the segment sum misses those cross terms. Batch norm layers inside task-specific
  heads are fine (they see one task's rows); batch norm in eval mode is per-example but its
  affine parameters are not handled, so it falls back too;
- every captured layer call sees the whole concatenated batch (``sum(segments)`` rows), or the
  layer is called once per task on that task's rows in the order of the segments (a shared
  head applied task by task: its whole gradient goes to that task's row), and no captured
  output is modified in place afterwards.

``segments`` is the caller's statement that the rows of segment ``i`` reach ``L_i`` only (true
for ``forward_tasks`` on separate mini-batches); it cannot be checked from one backward.

**Anything else** falls back to the general path (:func:`task_jacobian`): ``K`` vector-Jacobian
products, either batched in one ``torch.autograd.grad(..., is_grads_batched=True)`` call
(vmap over the backward graph, what torchjd does) or as a loop of ``K`` backward passes (what
LibMTL does). One shared batch with ``K`` losses (multi-label data) always needs the ``K``
products: every example reaches every loss.

**The shared representation** (MGDA-UB, Sener & Koltun 2018, Section 3.3): the Jacobian of the
losses w.r.t. the trunk's output ``Z`` needs a backward through the heads only;
:func:`representation_gramian` gives its Gramian ``[K, K]`` (diagonal when each task has its own
rows of ``Z``).

Task-specific parameters get their own task's gradient: with separate batches it is the
gradient of ``sum_i L_i`` (task ``j``'s loss does not reach ``theta_i``), which the same
backward gives (``extra`` in :meth:`TaskCapture.jacobian`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "GeneralMethod",
    "TaskCapture",
    "check_segments",
    "representation_gramian",
    "representation_jacobian",
    "task_jacobian",
]

GeneralMethod = Literal["batched", "loop"]
_GENERAL: tuple[str, ...] = get_args(GeneralMethod)
Fallback = Literal["auto", "batched", "loop"]
_FALLBACKS: tuple[str, ...] = get_args(Fallback)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.GroupNorm, nn.LayerNorm)  # per-example statistics: no coupling across rows


def _flat(
    grads: Sequence[Tensor | None], params: Sequence[Tensor], lead: tuple[int, ...]
) -> Tensor:
    """Concatenate gradients ``[*lead, *p.shape]`` (``None`` = zeros) into ``[*lead, P]``."""
    ref = params[0]
    parts = [
        (g if g is not None else torch.zeros(*lead, *p.shape, dtype=ref.dtype, device=ref.device))
        .reshape(*lead, -1)
        .to(ref.dtype)
        for g, p in zip(grads, params, strict=True)
    ]
    return torch.cat(parts, dim=-1)


def _check_losses(losses: object) -> Tensor:
    if (
        not isinstance(losses, Tensor)
        or losses.dim() != 1
        or losses.shape[0] == 0
        or not losses.is_floating_point()
    ):
        found = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
        raise ValueError(
            f"losses must be a float tensor [K] with K >= 1 (one loss per task, with its "
            f"autograd graph; torch.stack the task losses); got {found}"
        )
    if not losses.requires_grad:
        raise ValueError(
            "losses do not require grad: compute them with autograd enabled (not under "
            "torch.no_grad()) from parameters that require grad"
        )
    return losses


def task_jacobian(
    losses: Tensor,
    params: Iterable[Tensor],
    *,
    method: GeneralMethod = "batched",
    retain_graph: bool = False,
) -> Tensor:
    """The Jacobian ``[K, P]`` of ``losses`` ``[K]`` w.r.t. ``params`` (flattened, in order).

    The general path: ``K`` vector-Jacobian products, for any model.

    Args:
        losses: ``[K]`` task losses with their graph.
        params: the parameters (``P`` numbers in all); a parameter no loss reaches gets zeros.
        method: ``"batched"`` (one ``autograd.grad`` with ``is_grads_batched=True``, vmap over
            the graph) or ``"loop"`` (``K`` backward passes).
        retain_graph: keep the graph for another backward.

    Example:
        >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> task_jacobian(torch.stack([w.sum(), (w**2).sum()]), [w])
        tensor([[1., 1.],
                [2., 4.]])
    """
    losses = _check_losses(losses)
    params = list(params)
    if not params:
        raise ValueError("params is empty: pass the shared parameters (model.shared_parameters())")
    if method not in _GENERAL:
        raise ValueError(f"method must be one of {_GENERAL}; got {method!r}")
    k = losses.shape[0]
    if method == "batched" and k > 1:
        eye = torch.eye(k, dtype=losses.dtype, device=losses.device)
        grads = torch.autograd.grad(
            losses,
            params,
            grad_outputs=eye,
            is_grads_batched=True,
            retain_graph=retain_graph,
            allow_unused=True,
        )
        return _flat(grads, params, (k,))
    rows = []
    for i in range(k):
        g = torch.autograd.grad(
            losses[i], params, retain_graph=retain_graph or i < k - 1, allow_unused=True
        )
        rows.append(_flat(g, params, ()))
    return torch.stack(rows)


def check_segments(segments: Sequence[int], k: int) -> tuple[int, ...]:
    """Validate ``K`` positive row counts (task ``i`` owns the next ``segments[i]`` rows)."""
    out = tuple(segments)
    if len(out) != k or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in out):
        raise ValueError(
            f"segments must be {k} positive ints (the rows of each task's mini-batch in the "
            f"concatenated batch, in the order of the losses); got {segments!r}"
        )
    return out


@dataclass
class _Call:
    module: nn.Module
    input: Tensor
    output: Tensor
    version: int


def _owners(model: nn.Module) -> dict[int, tuple[nn.Module, str]]:
    out: dict[int, tuple[nn.Module, str]] = {}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            out.setdefault(id(p), (module, name))
    return out


def _conv_padding(module: Any) -> list[int] | None:
    """Numeric symmetric padding of a conv layer (``None`` when it cannot be expressed)."""
    pad = module.padding
    dims = len(module.kernel_size)
    if isinstance(pad, str):
        if pad == "valid":
            return [0] * dims
        total = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size, strict=True)]
        if any(t % 2 for t in total):
            return None
        return [t // 2 for t in total]
    return list(pad)


class TaskCapture:
    """Capture the inputs of the shared layers in a forward pass, so one backward gives ``J``.

    Use it around the forward pass of one concatenated batch whose consecutive row segments
    belong to the tasks, then ask for the Jacobian::

        capture = TaskCapture(model, model.shared_parameters(), exclude=head_params)
        with capture:
            outs = model.forward_tasks(xs, tasks)       # rows of task i: segments[i]
            losses = torch.stack([loss_i(out_i) ...])
        J, head_grads = capture.jacobian(losses, [x.shape[0] for x in xs], extra=head_params)

    Args:
        model: the module that holds the parameters.
        params: the shared parameters (the columns of ``J``, in this order).
        exclude: parameters known to be task-specific (their modules' batch norm, if any, sees
            one task's rows and does not couple tasks).
        fallback: the general path when the segment path does not apply: ``"batched"``,
            ``"loop"``, or ``"auto"``: batched for shared inputs (every loss reaches every
            example), a loop for separate batches (a batched backward would push all ``K``
            cotangents through every task's rows, ``K`` times the work; measured 14 s vs 2.6 s
            per Jacobian for ``K = 40`` on one CPU thread).

    Attributes:
        reason: ``None`` when the segment path applies to this model, else why not (the
            Jacobian then comes from the general path).
        last_path: the path the last :meth:`jacobian` call took: ``"segments"``, ``"batched"``
            or ``"loop"``.
        last_reason: why the last call took the general path (``None`` for segments).

    Example:
        >>> torch.manual_seed(0) and None
        >>> trunk, heads = nn.Linear(3, 4), nn.ModuleList([nn.Linear(4, 1), nn.Linear(4, 1)])
        >>> xs = [torch.randn(5, 3), torch.randn(2, 3)]
        >>> capture = TaskCapture(trunk, trunk.parameters())
        >>> with capture:
        ...     z = trunk(torch.cat(xs))
        ...     losses = torch.stack([heads[0](z[:5]).pow(2).mean(), heads[1](z[5:]).mean()])
        >>> J, _ = capture.jacobian(losses, [5, 2], retain_graph=True)
        >>> J.shape, capture.last_path
        (torch.Size([2, 16]), 'segments')
        >>> torch.allclose(J, task_jacobian(losses, list(trunk.parameters())), atol=1e-6)
        True
    """

    def __init__(
        self,
        model: nn.Module,
        params: Iterable[nn.Parameter],
        *,
        exclude: Iterable[nn.Parameter] = (),
        fallback: Fallback = "auto",
    ) -> None:
        if fallback not in _FALLBACKS:
            raise ValueError(f"fallback must be one of {_FALLBACKS}; got {fallback!r}")
        self.model = model
        self.params = list(params)
        if not self.params:
            raise ValueError("TaskCapture: params is empty; pass the shared parameters")
        self.fallback: Fallback = fallback
        self._exclude = {id(p) for p in exclude}
        owners = _owners(model)
        self._modules: list[nn.Module] = []
        reason = None
        for p in self.params:
            if id(p) not in owners:
                reason = "a shared parameter is not a parameter of the model"
                break
            module, attr = owners[id(p)]
            if attr not in ("weight", "bias"):
                reason = f"parameter {attr!r} of {type(module).__name__} is not a weight or bias"
                break
            if isinstance(module, nn.Linear | nn.GroupNorm | nn.LayerNorm):
                pass
            elif isinstance(module, _CONVS):
                if module.padding_mode != "zeros" or _conv_padding(module) is None:
                    reason = f"{type(module).__name__} with padding {module.padding!r} / mode "
                    reason += f"{module.padding_mode!r} is not handled"
                    break
            else:
                reason = (
                    f"shared parameters of {type(module).__name__} are not handled (only "
                    "nn.Linear, nn.Conv1d/2d/3d, nn.GroupNorm and nn.LayerNorm are)"
                )
                break
            if module not in self._modules:
                self._modules.append(module)
        self.reason: str | None = reason
        self.last_path: str | None = None
        self.last_reason: str | None = None
        self._calls: list[_Call] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _coupling(self, specific: set[int]) -> str | None:
        """Why the model's current mode couples the examples of different tasks (or None)."""
        for module in self.model.modules():
            if isinstance(module, _BatchNorm) and module.training:
                own = list(module.parameters(recurse=False))
                if own and all(id(p) in specific for p in own):
                    continue  # a task-specific head's batch norm sees one task's rows
                return (
                    f"{type(module).__name__} in training mode normalises over the whole "
                    "concatenated batch, which couples the tasks' examples"
                )
        return None

    def __repr__(self) -> str:
        path = "segments" if self.reason is None else f"general ({self.reason})"
        return f"TaskCapture(layers={len(self._modules)}, path={path!r})"

    def __enter__(self) -> TaskCapture:
        self._calls = []
        if self.reason is None:
            for module in self._modules:
                self._handles.append(module.register_forward_hook(self._record))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _record(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if torch.is_grad_enabled() and isinstance(output, Tensor) and output.requires_grad:
            self._calls.append(_Call(module, inputs[0].detach(), output, output._version))

    def clear(self) -> None:
        """Forget the captured activations (they are also dropped by the next forward)."""
        self._calls = []

    def _segment_reason(self, segments: tuple[int, ...], specific: set[int]) -> str | None:
        if self.reason is not None:
            return self.reason
        coupling = self._coupling(specific)
        if coupling is not None:
            return coupling
        if not self._calls:
            return "no layer call was captured (run the forward pass inside `with capture:`)"
        for call in self._calls:
            if call.output._version != call.version:
                return f"the output of a {type(call.module).__name__} was modified in place"
        if self._assign(segments) is None:
            return (
                "a layer call saw neither the whole concatenated batch "
                f"({sum(segments)} rows) nor one task's rows in the order of the tasks (shared "
                "inputs or a sliced batch)"
            )
        return None

    def _assign(self, segments: tuple[int, ...]) -> list[int | None] | None:
        """Which task each captured call belongs to: ``None`` for a call over the whole batch,
        ``i`` for the ``i``-th of a module's per-task calls (a layer called once per task on
        that task's rows, in the order of the segments, like a shared head); ``None`` overall
        when a call fits neither pattern."""
        total = sum(segments)
        per_module: dict[int, list[int]] = {}
        for n, call in enumerate(self._calls):
            if call.input.shape[0] != call.output.shape[0]:
                return None
            if call.input.shape[0] != total:
                per_module.setdefault(id(call.module), []).append(n)
        out: list[int | None] = [None] * len(self._calls)
        for calls in per_module.values():
            rows = [self._calls[n].input.shape[0] for n in calls]
            if len(calls) % len(segments) or rows != list(segments) * (len(calls) // len(segments)):
                return None
            for j, n in enumerate(calls):
                out[n] = j % len(segments)
        return out

    def jacobian(
        self,
        losses: Tensor,
        segments: Sequence[int] | None,
        *,
        extra: Sequence[Tensor] = (),
        retain_graph: bool = False,
    ) -> tuple[Tensor, list[Tensor | None]]:
        """``J [K, P]`` over the shared parameters, and ``grad sum(losses)`` for ``extra``.

        Args:
            losses: ``[K]`` with graph, computed inside the ``with`` block.
            segments: rows per task in the concatenated batch, in the order of ``losses``;
                ``None`` when the tasks share their inputs (general path).
            extra: more parameters (the task-specific ones) whose gradient of ``sum(losses)``
                is returned alongside (``None`` where no loss reaches); like ``exclude``, their
                batch norm layers are not counted as coupling the tasks.
            retain_graph: keep the graph for another backward.
        """
        losses = _check_losses(losses)
        k = losses.shape[0]
        extra = list(extra)
        why = "shared inputs (no segments)" if segments is None else None
        if segments is not None:
            segments = check_segments(segments, k)
            why = self._segment_reason(segments, self._exclude | {id(p) for p in extra})
        self.last_reason = why
        try:
            if why is not None:
                method: GeneralMethod
                if self.fallback == "auto":
                    method = "batched" if segments is None else "loop"
                else:
                    method = self.fallback
                return self._general(losses, extra, retain_graph, method)
            return self._segments(losses, segments, extra, retain_graph)  # type: ignore[arg-type]
        finally:
            self._calls = []

    def _general(
        self, losses: Tensor, extra: list[Tensor], retain_graph: bool, method: GeneralMethod
    ) -> tuple[Tensor, list[Tensor | None]]:
        self.last_path = method
        keep = retain_graph or bool(extra)
        jac = task_jacobian(losses, self.params, method=method, retain_graph=keep)
        rest: list[Tensor | None] = []
        if extra:
            rest = list(
                torch.autograd.grad(
                    losses.sum(), extra, retain_graph=retain_graph, allow_unused=True
                )
            )
        return jac, rest

    def _segments(
        self, losses: Tensor, segments: tuple[int, ...], extra: list[Tensor], retain_graph: bool
    ) -> tuple[Tensor, list[Tensor | None]]:
        self.last_path = "segments"
        calls = self._calls
        grads = torch.autograd.grad(
            losses.sum(),
            [c.output for c in calls] + extra,
            retain_graph=retain_graph,
            allow_unused=True,
        )
        k = len(segments)
        owners = self._assign(segments)
        assert owners is not None
        blocks: dict[int, Tensor] = {}
        for call, g_out, task in zip(calls, grads[: len(calls)], owners, strict=True):
            if g_out is None:
                continue
            if task is None:
                rows = self._layer_rows(call, g_out, segments)
            else:
                rows = _one_task_rows(call, g_out, task, k)
            for name, block in rows.items():
                p = getattr(call.module, name)
                blocks[id(p)] = blocks[id(p)] + block if id(p) in blocks else block
        ref = self.params[0]
        parts = [
            blocks[id(p)].reshape(k, -1).to(ref.dtype)
            if id(p) in blocks
            else torch.zeros(k, p.numel(), dtype=ref.dtype, device=ref.device)
            for p in self.params
        ]
        return torch.cat(parts, dim=1), list(grads[len(calls) :])

    @staticmethod
    def _layer_rows(call: _Call, g_out: Tensor, segments: tuple[int, ...]) -> dict[str, Tensor]:
        """``{"weight": [K, *W.shape], "bias": [K, *b.shape]}`` of one layer call."""
        module: Any = call.module
        a = call.input
        k = len(segments)
        dtype = torch.promote_types(module.weight.dtype, torch.float32)
        a, g = a.to(dtype), g_out.to(dtype)
        out: dict[str, Tensor] = {}
        if isinstance(module, _NORMS):
            return _norm_rows(module, a, g, segments)
        if isinstance(module, nn.Linear):
            a2 = a.reshape(a.shape[0], -1, a.shape[-1])
            g2 = g.reshape(g.shape[0], -1, g.shape[-1])
            if len(set(segments)) == 1:
                n = segments[0]
                aa = a2.reshape(k, n * a2.shape[1], a2.shape[2])
                gg = g2.reshape(k, n * g2.shape[1], g2.shape[2])
                out["weight"] = torch.bmm(gg.transpose(1, 2), aa)
                if module.bias is not None:
                    out["bias"] = gg.sum(1)
            else:
                ws, bs = [], []
                for ak, gk in zip(a2.split(segments), g2.split(segments), strict=True):
                    ws.append(gk.flatten(0, 1).T @ ak.flatten(0, 1))
                    bs.append(gk.sum((0, 1)))
                out["weight"] = torch.stack(ws)
                if module.bias is not None:
                    out["bias"] = torch.stack(bs)
            return out
        # Convolutions: one weight-gradient convolution per task's rows.
        padding = _conv_padding(module)
        dims = len(module.kernel_size)
        weight = module.weight.detach().to(dtype)  # only its shape and values: no graph
        ws, bs = [], []
        for ak, gk in zip(a.split(segments), g.split(segments), strict=True):
            _, gw, _ = torch.ops.aten.convolution_backward(
                gk,
                ak,
                weight,
                None,
                list(module.stride),
                padding,
                list(module.dilation),
                False,
                [0] * dims,
                module.groups,
                [False, True, False],
            )
            ws.append(gw)
            if module.bias is not None:
                bs.append(gk.sum([0, *range(2, gk.dim())]))
        out["weight"] = torch.stack(ws)
        if module.bias is not None:
            out["bias"] = torch.stack(bs)
        return out


def _norm_rows(
    module: nn.GroupNorm | nn.LayerNorm, a: Tensor, g: Tensor, segments: tuple[int, ...]
) -> dict[str, Tensor]:
    """Per-task gradients of a GroupNorm / LayerNorm's affine ``gamma``, ``beta``.

    ``y = gamma * xhat + beta`` with ``xhat`` normalised within each example, so
    ``grad_gamma L_i = sum_{b in task i} g_b * xhat_b`` (summed over every position that shares
    a ``gamma`` entry) and ``grad_beta L_i = sum_{b in task i} g_b``.
    """
    if isinstance(module, nn.GroupNorm):
        xhat = F.group_norm(a, module.num_groups, None, None, module.eps)
        reduce = [d for d in range(1, a.dim()) if d != 1]  # all but batch and channel
    else:
        xhat = F.layer_norm(a, module.normalized_shape, None, None, module.eps)
        reduce = list(range(1, a.dim() - len(module.normalized_shape)))
    gx = g * xhat
    ws, bs = [], []
    for gxk, gk in zip(gx.split(segments), g.split(segments), strict=True):
        ws.append(gxk.sum([0, *reduce]))
        bs.append(gk.sum([0, *reduce]))
    out: dict[str, Tensor] = {}
    if module.weight is not None:
        out["weight"] = torch.stack(ws)
    if module.bias is not None:
        out["bias"] = torch.stack(bs)
    return out


def _one_task_rows(call: _Call, g_out: Tensor, task: int, k: int) -> dict[str, Tensor]:
    """A call over one task's rows: its whole weight gradient goes to row ``task``."""
    out = {}
    for name, one in TaskCapture._layer_rows(call, g_out, (g_out.shape[0],)).items():
        block = one.new_zeros(k, *one.shape[1:])
        block[task] = one[0]
        out[name] = block
    return out


def representation_jacobian(
    losses: Tensor,
    representation: Tensor,
    segments: Sequence[int] | None = None,
    *,
    method: GeneralMethod = "batched",
    retain_graph: bool = True,
) -> Tensor:
    """``[K, numel(Z)]``: row ``i`` is ``grad_Z L_i`` for the shared representation ``Z``.

    With ``segments`` (task ``i`` owns rows ``[s_i, e_i)`` of ``Z``), one backward of
    ``sum(losses)`` through the heads gives every row (zeros outside each task's rows); else
    ``K`` vector-Jacobian products through the heads.

    Example:
        >>> z = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
        >>> losses = torch.stack([z[0].sum(), 2 * z[1, 0]])
        >>> representation_jacobian(losses, z, [1, 1])
        tensor([[1., 1., 0., 0.],
                [0., 0., 2., 0.]])
    """
    losses = _check_losses(losses)
    k = losses.shape[0]
    if segments is None:
        return task_jacobian(losses, [representation], method=method, retain_graph=retain_graph)
    segments = check_segments(segments, k)
    if sum(segments) != representation.shape[0]:
        raise ValueError(
            f"segments cover {sum(segments)} rows but the representation has "
            f"{representation.shape[0]}"
        )
    (g,) = torch.autograd.grad(losses.sum(), representation, retain_graph=retain_graph)
    out = g.new_zeros(k, *g.shape)
    start = 0
    for i, n in enumerate(segments):
        out[i, start : start + n] = g[start : start + n]
        start += n
    return out.reshape(k, -1)


def representation_gramian(
    losses: Tensor,
    representation: Tensor,
    segments: Sequence[int] | None = None,
    *,
    method: GeneralMethod = "batched",
    retain_graph: bool = True,
) -> Tensor:
    """The Gramian ``[K, K]`` (float64) of :func:`representation_jacobian`, without forming it
    when each task has its own rows (then it is diagonal: ``||grad_Z L_i||^2``).

    Example:
        >>> z = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
        >>> representation_gramian(torch.stack([z[0].sum(), 2 * z[1, 0]]), z, [1, 1])
        tensor([[2., 0.],
                [0., 4.]], dtype=torch.float64)
    """
    losses = _check_losses(losses)
    if segments is None:
        jac = task_jacobian(losses, [representation], method=method, retain_graph=retain_graph)
        return (jac @ jac.T).to(torch.float64)
    segments = check_segments(segments, losses.shape[0])
    if sum(segments) != representation.shape[0]:
        raise ValueError(
            f"segments cover {sum(segments)} rows but the representation has "
            f"{representation.shape[0]}"
        )
    (g,) = torch.autograd.grad(losses.sum(), representation, retain_graph=retain_graph)
    norms = torch.stack([part.pow(2).sum() for part in g.split(segments)])
    return torch.diag(norms.to(torch.float64))
