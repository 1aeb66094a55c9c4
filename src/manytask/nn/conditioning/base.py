"""One interface for every multi-task model ``f_theta(y | x, z_i)``, and its parameter split.

CS330's multi-task lecture writes the model as ``f_theta(y | x, z_i)`` with a task descriptor
``z_i`` and splits the parameters into shared ``theta_sh`` and task-specific ``theta_i``;
choosing how to condition on ``z_i`` is choosing what to share. Every model here is called
the same way:

- ``model(x, task)``: ``x [B, *input_shape]``; ``task`` an ``int`` (every row belongs to that
  task) gives ``[B, num_outputs[task]]``; a task-index tensor ``[B]`` (rows of several tasks,
  every model) or a descriptor batch ``[B, D]`` float (models with ``reads_descriptors`` and
  shared heads) gives ``[B, max(num_outputs)]``: row ``b``'s task reads its first ``n_i``
  units (see :func:`mask_logits`).
- ``model.forward_tasks(xs, tasks)``: one call for per-task mini-batches; the shared
  computation runs once on the concatenated batch, and once on ``x`` itself when every task
  gets the same tensor (``xs[j] is xs[0]``, multi-label data) and the architecture's shared
  part does not depend on the task.
- ``shared_parameters()`` (``theta_sh``), ``task_parameters(i)`` (``theta_i``) and
  ``parameter_counts()``. The split is by *reach*: ``theta_i`` holds the parameters that only
  task ``i``'s output depends on, so task ``j``'s loss gives them exactly zero gradient;
  everything any two tasks reach is shared. The two are disjoint and together are
  ``parameters()``.

**Heterogeneous outputs.** Tasks may have different output sizes (Omniglot alphabets have 14
to 55 characters; Census mixes binary and regression tasks). ``heads="per_task"`` gives every
task its own output layer (in ``theta_i``); ``heads="shared"`` gives one layer of
``max(num_outputs)`` units, shared, of which task ``i`` reads the first ``num_outputs[i]``
(the others are masked out: sliced away for an ``int`` task, or set to ``-inf`` by
:func:`mask_logits` for a mixed batch). Descriptor-conditioned models default to shared heads,
so that the descriptor alone tells the tasks apart and a descriptor batch can be served.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from manytask.nn.backbones import BackboneFactory, Trunk

__all__ = [
    "DescriptorConditioned",
    "HeadMode",
    "MultiTaskModel",
    "TaskHeads",
    "mask_logits",
    "one_hot_table",
]

HeadMode = Literal["per_task", "shared"]
_HEAD_MODES: tuple[str, ...] = get_args(HeadMode)
Request = tuple[int, int, int]  # (task, first row, end row) of a batch


def mask_logits(logits: Tensor, num_outputs: Tensor) -> Tensor:
    """Set the units a row's task does not have to ``-inf``.

    Args:
        logits: ``[B, max_outputs]`` outputs of a shared head.
        num_outputs: ``[B]`` int, the output size of each row's task.

    Returns:
        ``[B, max_outputs]``: unit ``k`` of row ``b`` kept where ``k < num_outputs[b]``.

    Example:
        >>> mask_logits(torch.zeros(2, 3), torch.tensor([2, 3]))
        tensor([[0., 0., -inf],
                [0., 0., 0.]])
    """
    units = torch.arange(logits.shape[-1], device=logits.device)
    keep = units.unsqueeze(0) < num_outputs.to(logits.device).unsqueeze(1)
    return logits.masked_fill(~keep, float("-inf"))


def one_hot_table(num_tasks: int) -> Tensor:
    """The one-hot descriptors ``[K, K]`` (row ``i`` is ``z_i = e_i``)."""
    return torch.eye(num_tasks)


def _tower(in_features: int, hidden: Sequence[int], out_features: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_features, h), nn.ReLU()]
        in_features = h
    layers.append(nn.Linear(in_features, out_features))
    return nn.Sequential(*layers)


def check_hidden(owner: str, name: str, hidden: Sequence[int]) -> tuple[int, ...]:
    """Validate a tuple of layer widths (may be empty)."""
    out = tuple(hidden)
    if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in out):
        raise ValueError(f"{owner}: {name} must be a sequence of positive ints; got {hidden!r}")
    return out


def check_positive(owner: str, name: str, value: object) -> int:
    """Validate a positive int argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int; got {value!r}")
    return value


def check_positions(
    owner: str, name: str, positions: Sequence[int] | None, depth: int, *, lowest: int = 0
) -> tuple[int, ...]:
    """Validate layer positions (``0`` = the input, ``l`` = the output of stage ``l``);
    ``None`` means every stage output ``1..depth``."""
    if positions is None:
        return tuple(range(max(lowest, 1), depth + 1))
    out = tuple(positions)
    bad = [p for p in out if isinstance(p, bool) or not isinstance(p, int)]
    if bad or not out or any(not lowest <= p <= depth for p in out) or len(set(out)) != len(out):
        raise ValueError(
            f"{owner}: {name} must be distinct ints in [{lowest}, {depth}] (0 = the input, l = "
            f"the output of stage l; this backbone has {depth} stages); got {positions!r}"
        )
    return tuple(sorted(out))


class TaskHeads(nn.Module):
    """Output layers for ``K`` tasks of sizes ``num_outputs``: one per task, or one shared.

    Args:
        in_features: size of the features the heads read.
        num_outputs: output size of every task.
        mode: ``"per_task"`` (a tower per task, task-specific) or ``"shared"`` (one tower of
            ``max(num_outputs)`` units; task ``i`` reads the first ``num_outputs[i]``).
        hidden: hidden widths of each tower (``()`` = one linear layer).

    Example:
        >>> heads = TaskHeads(8, (3, 5), mode="shared")
        >>> heads(torch.zeros(4, 8), 0).shape, heads.all_outputs(torch.zeros(4, 8)).shape
        (torch.Size([4, 3]), torch.Size([4, 5]))
    """

    def __init__(
        self,
        in_features: int,
        num_outputs: Sequence[int],
        mode: HeadMode = "per_task",
        hidden: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if mode not in _HEAD_MODES:
            raise ValueError(f"heads must be one of {_HEAD_MODES}; got {mode!r}")
        self.mode = mode
        self.num_outputs = tuple(num_outputs)
        self.hidden = check_hidden("TaskHeads", "hidden", hidden)
        if mode == "per_task":
            self.towers = nn.ModuleList(
                _tower(in_features, self.hidden, n) for n in self.num_outputs
            )
        else:
            self.towers = nn.ModuleList([_tower(in_features, self.hidden, max(self.num_outputs))])

    def forward(self, h: Tensor, task: int) -> Tensor:
        """``[B, in_features] -> [B, num_outputs[task]]``."""
        if self.mode == "per_task":
            return self.towers[task](h)
        return self.towers[0](h)[:, : self.num_outputs[task]]

    def all_outputs(self, h: Tensor) -> Tensor:
        """The shared head's ``[B, max(num_outputs)]`` (``mode="shared"`` only)."""
        if self.mode != "shared":
            raise ValueError(
                "per-task heads cannot serve a descriptor batch (which task's head would each "
                "row use?); build the model with heads='shared', or pass task as an int"
            )
        return self.towers[0](h)

    def task_parameters(self, task: int) -> list[nn.Parameter]:
        return list(self.towers[task].parameters()) if self.mode == "per_task" else []

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, num_outputs={self.num_outputs}, hidden={self.hidden}"


class MultiTaskModel(nn.Module):
    """Base class: the ``model(x, task)`` call, ``forward_tasks`` and the parameter split.

    Subclasses implement :meth:`_forward_requests` (outputs for row ranges of one batch, each
    with its task) and :meth:`_task_parameter_list`; descriptor-reading models also implement
    :meth:`_forward_descriptors`.

    Args:
        input_shape: per-example input shape, e.g. ``(1, 28, 28)``.
        num_outputs: output size of every task (``K = len(num_outputs)``).
    """

    #: accepts a descriptor batch ``[B, D]`` as ``task``
    reads_descriptors: ClassVar[bool] = False
    #: the computation before anything task-specific does not depend on the task, so
    #: ``forward_tasks`` on shared inputs runs it once on ``x`` (rows may be requested by
    #: several tasks)
    shares_input_pass: ClassVar[bool] = False

    def __init__(self, input_shape: Sequence[int], num_outputs: Sequence[int]) -> None:
        super().__init__()
        name = type(self).__name__
        self.input_shape = tuple(input_shape)
        outs = tuple(num_outputs)
        if not outs or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in outs):
            raise ValueError(
                f"{name}: num_outputs must be a non-empty sequence of positive ints (one per "
                f"task); got {num_outputs!r}"
            )
        self.num_outputs = outs

    @property
    def num_tasks(self) -> int:
        """Number of tasks ``K``."""
        return len(self.num_outputs)

    # -- calls ---------------------------------------------------------------------------

    def forward(self, x: Tensor, task: int | Tensor) -> Tensor:
        """Predictions for a batch of one task, or for rows described by descriptors.

        Args:
            x: ``[B, *input_shape]``.
            task: an ``int`` task index (also a 0-d integer tensor); a task-index tensor
                ``[B]`` (row ``b`` belongs to task ``task[b]``); or a descriptor batch
                ``[B, D]`` float (models with ``reads_descriptors``).

        Returns:
            ``[B, num_outputs[task]]`` for an int task; ``[B, max(num_outputs)]`` for a
            task-index tensor (row ``b``'s first ``num_outputs[task[b]]`` units, zeros after:
            mask them with :func:`mask_logits` before a softmax) or a descriptor batch.
        """
        self._check_x(x)
        if isinstance(task, Tensor) and task.is_floating_point():
            if not self.reads_descriptors:
                raise ValueError(
                    f"{type(self).__name__} picks its task-specific parts by task index: pass "
                    "task as an int. Descriptor batches need a descriptor-conditioned model "
                    "(concat, additive, multiplicative, film, full_sharing, gating)."
                )
            if task.dim() != 2 or task.shape[0] != x.shape[0]:
                raise ValueError(
                    f"a descriptor batch must be [B, D] with B = {x.shape[0]} rows of x; got "
                    f"{tuple(task.shape)}"
                )
            return self._forward_descriptors(x, task)
        if isinstance(task, Tensor) and task.dim() == 1:
            return self._forward_rows(x, task)
        index = self._check_task(task)
        return self._forward_requests(x, [(index, 0, x.shape[0])])[0]

    def _forward_rows(self, x: Tensor, task: Tensor) -> Tensor:
        """Rows of several tasks in one batch: grouped by task, one pass, put back in order."""
        if task.shape[0] != x.shape[0] or task.is_floating_point() or task.dtype == torch.bool:
            raise ValueError(
                f"a task-index tensor must be [B] integers with B = {x.shape[0]} rows of x; got "
                f"{task.dtype} {tuple(task.shape)}"
            )
        ids = task.to("cpu", torch.long)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_tasks):
            raise ValueError(f"task indices must be in [0, {self.num_tasks}); got {ids.tolist()}")
        order = torch.argsort(ids, stable=True)
        counts = torch.bincount(ids, minlength=self.num_tasks).tolist()
        requests, start = [], 0
        for t, n in enumerate(counts):
            if n:
                requests.append((t, start, start + n))
                start += n
        outs = self._forward_requests(x[order.to(x.device)], requests)
        width = max(self.num_outputs)
        grouped = torch.cat([F.pad(o, (0, width - o.shape[1])) for o in outs])
        return grouped[torch.argsort(order).to(grouped.device)]

    def forward_tasks(self, xs: Sequence[Tensor], tasks: Sequence[int]) -> list[Tensor]:
        """Outputs for one mini-batch per task: ``out[j] = model(xs[j], tasks[j])``.

        The shared computation runs once on ``torch.cat(xs)``; when every ``xs[j]`` is the
        same tensor (shared inputs), models with ``shares_input_pass`` run it once on that
        tensor. Same values as per-task calls, up to batch statistics (batch norm sees the
        concatenated batch).

        Args:
            xs: ``[B_j, *input_shape]`` per request.
            tasks: the task index of every request.

        Returns:
            ``[B_j, num_outputs[tasks[j]]]`` per request.
        """
        if len(xs) != len(tasks) or not xs:
            raise ValueError(
                f"forward_tasks needs one task per mini-batch and at least one; got "
                f"{len(xs)} mini-batches and {len(tasks)} tasks"
            )
        for x in xs:
            self._check_x(x)
        indices = [self._check_task(t) for t in tasks]
        if len(xs) > 1 and all(x is xs[0] for x in xs):
            b = xs[0].shape[0]
            if self.shares_input_pass:
                return self._forward_requests(xs[0], [(t, 0, b) for t in indices])
            x = torch.cat(list(xs))
        else:
            x = torch.cat(list(xs)) if len(xs) > 1 else xs[0]
        requests, start = [], 0
        for t, xj in zip(indices, xs, strict=True):
            requests.append((t, start, start + xj.shape[0]))
            start += xj.shape[0]
        return self._forward_requests(x, requests)

    def _forward_requests(self, x: Tensor, requests: Sequence[Request]) -> list[Tensor]:
        """Outputs for row ranges ``x[start:end]`` of task ``t``, one per ``(t, start, end)``.

        Ranges are consecutive and disjoint unless the class sets ``shares_input_pass``
        (then several requests may cover the same rows)."""
        raise NotImplementedError

    def _forward_descriptors(self, x: Tensor, z: Tensor) -> Tensor:
        raise NotImplementedError

    def _check_x(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or tuple(x.shape[1:]) != self.input_shape:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"{type(self).__name__} expects x of shape [B, *input_shape] with input_shape="
                f"{self.input_shape}; got {shape}"
            )

    def _check_task(self, task: object) -> int:
        if isinstance(task, Tensor) and task.dim() == 0 and not task.is_floating_point():
            task = int(task)
        if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < self.num_tasks:
            raise ValueError(
                f"task must be an int in [0, {self.num_tasks}) or a descriptor batch [B, D] "
                f"float; got {task!r}"
            )
        return task

    # -- parameter split -----------------------------------------------------------------

    def _task_parameter_list(self, task: int) -> list[nn.Parameter]:
        raise NotImplementedError

    def task_parameters(self, task: int) -> Iterator[nn.Parameter]:
        """``theta_i``: the parameters only task ``task``'s outputs depend on."""
        yield from self._task_parameter_list(self._check_task(task))

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """``theta_sh``: every other parameter, in ``parameters()`` order."""
        specific = {id(p) for t in range(self.num_tasks) for p in self._task_parameter_list(t)}
        for p in self.parameters():
            if id(p) not in specific:
                yield p

    def parameter_counts(self) -> dict[str, int | list[int]]:
        """``{"shared": |theta_sh|, "per_task": [|theta_1|, ..., |theta_K|]}`` (scalars)."""
        return {
            "shared": sum(p.numel() for p in self.shared_parameters()),
            "per_task": [
                sum(p.numel() for p in self._task_parameter_list(t)) for t in range(self.num_tasks)
            ],
        }

    def _check_split(self) -> None:
        """Construction-time check that the task-specific sets are disjoint."""
        seen: dict[int, int] = {}
        for t in range(self.num_tasks):
            for p in self._task_parameter_list(t):
                if id(p) in seen and seen[id(p)] != t:
                    raise AssertionError(
                        f"{type(self).__name__}: a parameter is listed for tasks {seen[id(p)]} "
                        f"and {t}"
                    )
                seen[id(p)] = t


def dry_run(model: MultiTaskModel, call: Callable[[Tensor], object]) -> None:
    """Run ``call`` on one zero example in eval mode without gradients (a construction-time
    check that the pieces fit), then restore every module's mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        ref = next(iter(model.parameters()), None)
        dtype = ref.dtype if ref is not None else torch.float32
        device = ref.device if ref is not None else None
        with torch.no_grad():
            call(torch.zeros((1, *model.input_shape), dtype=dtype, device=device))
    finally:
        for m, mode in modes:
            m.train(mode)


def per_channel(v: Tensor, h: Tensor) -> Tensor:
    """``[B, C] -> [B, C, 1, ..., 1]`` to broadcast over the trailing dims of ``h``."""
    return v.view(*v.shape, *([1] * (h.dim() - 2)))


class DescriptorConditioned(MultiTaskModel):
    """Base of the models that read a descriptor ``z`` inside a shared backbone.

    It owns the descriptor table (a buffer ``[K, D]``, saved with the model), the
    :class:`~manytask.nn.backbones.Trunk` and the heads; a subclass says what happens to the
    activation at each conditioned position by implementing :meth:`_condition`.

    Args:
        backbone: a factory building the backbone (called once).
        input_shape: per-example input shape.
        num_outputs: output size of every task.
        descriptors: ``[K, D]`` descriptor of every task (default: one-hot, ``D = K``).
        heads: ``"shared"`` (default: everything but ``z`` shared) or ``"per_task"``.
        head_hidden: hidden widths of the head tower(s).
    """

    reads_descriptors = True
    descriptors: Tensor

    def __init__(
        self,
        backbone: BackboneFactory,
        input_shape: Sequence[int],
        num_outputs: Sequence[int],
        *,
        descriptors: Tensor | None = None,
        heads: HeadMode = "shared",
        head_hidden: Sequence[int] = (),
    ) -> None:
        super().__init__(input_shape, num_outputs)
        name = type(self).__name__
        if heads not in _HEAD_MODES:
            raise ValueError(f"{name}: heads must be one of {_HEAD_MODES}; got {heads!r}")
        if descriptors is None:
            descriptors = one_hot_table(self.num_tasks)
        if (
            not isinstance(descriptors, Tensor)
            or descriptors.dim() != 2
            or descriptors.shape[0] != self.num_tasks
        ):
            shape = tuple(descriptors.shape) if isinstance(descriptors, Tensor) else descriptors
            raise ValueError(
                f"{name}: descriptors must be a [K, D] tensor with K = {self.num_tasks} tasks; "
                f"got {shape}"
            )
        if not bool(torch.isfinite(descriptors).all()):
            raise ValueError(f"{name}: descriptors contain NaN or inf")
        self.register_buffer("descriptors", descriptors.detach().to(torch.float32).clone())
        self.head_mode: HeadMode = heads
        self.head_hidden = check_hidden(name, "head_hidden", head_hidden)
        self.trunk = Trunk(backbone(), input_shape)

    @property
    def descriptor_dim(self) -> int:
        """Size ``D`` of one descriptor."""
        return int(self.descriptors.shape[1])

    def _build_heads(self, in_features: int) -> None:
        self.heads = TaskHeads(in_features, self.num_outputs, self.head_mode, self.head_hidden)
        self._check_split()
        dry_run(self, lambda x: self._forward_requests(x, [(0, 0, 1)]))

    def _condition(self, position: int, h: Tensor, z: Tensor) -> Tensor:
        """The activation at ``position`` (0 = input, ``l`` = after stage ``l``) given ``z``."""
        raise NotImplementedError

    def features(self, x: Tensor, z: Tensor) -> Tensor:
        """The conditioned trunk: ``[B, *input_shape], [B, D] -> [B, F]``."""
        h = self._condition(0, x, z)
        for position, stage in enumerate(self.trunk.stages, start=1):
            h = self._condition(position, stage(h), z)
        return torch.flatten(h, 1)

    def _forward_requests(self, x: Tensor, requests: Sequence[Request]) -> list[Tensor]:
        ids = torch.cat([torch.full((e - s,), t, dtype=torch.long) for t, s, e in requests]).to(
            self.descriptors.device
        )
        h = self.features(x, self.descriptors[ids])
        return [self.heads(h[s:e], t) for t, s, e in requests]

    def _forward_descriptors(self, x: Tensor, z: Tensor) -> Tensor:
        if z.shape[1] != self.descriptor_dim:
            raise ValueError(
                f"{type(self).__name__} was built for descriptors of size "
                f"{self.descriptor_dim}; got [B, {z.shape[1]}]"
            )
        if self.head_mode != "shared":
            self.heads.all_outputs(x)  # raises the explanation
        return self.heads.all_outputs(self.features(x, z.to(self.descriptors.dtype)))

    def _task_parameter_list(self, task: int) -> list[nn.Parameter]:
        return self.heads.task_parameters(task)

    def extra_repr(self) -> str:
        return (
            f"input_shape={self.input_shape}, num_outputs={self.num_outputs}, "
            f"descriptor_dim={self.descriptor_dim}, heads={self.head_mode!r}, "
            f"head_hidden={self.head_hidden}"
        )
