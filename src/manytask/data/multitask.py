"""Multi-task data: task specs and per-task train / validation / test examples.

A task is ``T_i = {p_i(x), p_i(y|x), L_i}`` (CS330, multi-task learning basics): its inputs,
its labels given the inputs and its loss. :class:`TaskSpec` states the kind of output, the
loss ``L_i``, the metrics (the first is the headline), a weight ``w_i`` for the objective
``sum_i w_i L_i``, and the task's descriptor ``z_i`` in two forms: a natural-language
``description`` (for text encoders) and a ``metadata`` vector (the same length for every task
of a data set). :class:`TaskData` holds one task's examples in one split, and
:class:`MultiTaskData` a whole data set: ``K`` specs and three splits of ``K`` task data each.

The lecture's three regimes all fit:

- multi-task classification, different ``p_i(x)`` (Omniglot by alphabet): each task has its
  own ``x``; ``shared_inputs=False``;
- multi-label learning, same ``x`` (MULAN yeast / scene / emotions, MultiMNIST's left and
  right digit): every task of a split holds the SAME ``x`` tensor object,
  ``shared_inputs=True``, so one forward pass serves every task's loss;
- tasks with different losses (Census-Income: two binary tasks and a regression).

Conventions: images may be ``uint8`` (ink / bright = 255) to save memory; :func:`to_float`
turns a batch into ``float32`` in ``[0, 1]`` with one operation per batch. Labels are ``int64``
``[n]`` class ids (multiclass), ``float32`` ``[n]`` 0/1 (binary) or ``float32`` ``[n, d]``
(regression, ``d = num_outputs``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from manytask.metrics import METRICS, get_metric

__all__ = ["MultiTaskData", "TaskData", "TaskKind", "TaskSpec", "stack_labels", "to_float"]

TaskKind = Literal["multiclass", "binary", "regression"]
_KINDS: tuple[str, ...] = get_args(TaskKind)
Split = Literal["train", "val", "test"]

DEFAULT_LOSS: dict[str, str] = {"multiclass": "cross_entropy", "binary": "bce", "regression": "mse"}
"""The loss a task gets when its spec names none."""
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "multiclass": ("accuracy",),
    "binary": ("auc", "accuracy"),
    "regression": ("mse", "mae"),
}
"""The metrics a task gets when its spec names none (the first is the headline)."""
LOSSES: dict[str, tuple[str, ...]] = {
    "cross_entropy": ("multiclass",),
    "bce": ("binary",),
    "mse": ("regression",),
}
"""Loss names and the task kinds each applies to."""


def to_float(x: Tensor) -> Tensor:
    """A batch as ``float32``: ``uint8`` images are scaled to ``[0, 1]``, floats pass through.

    Example:
        >>> to_float(torch.tensor([0, 255], dtype=torch.uint8)).tolist()
        [0.0, 1.0]
    """
    if x.dtype == torch.uint8:
        return x.to(torch.float32).mul_(1.0 / 255.0)
    return x if x.dtype == torch.float32 else x.to(torch.float32)


@dataclass(frozen=True)
class TaskSpec:
    """One task: its output kind, loss, metrics, weight and descriptor ``z_i``.

    Attributes:
        name: a short unique name (``"income"``, ``"Korean"``, ``"left"``).
        kind: ``"multiclass"``, ``"binary"`` or ``"regression"``.
        num_outputs: classes (multiclass, ``>= 2``), 1 (binary), or the target dimension
            (regression).
        loss: ``"cross_entropy"`` (multiclass), ``"bce"`` (binary, on logits) or ``"mse"``
            (regression); empty = the default for the kind.
        metrics: names in :data:`manytask.metrics.METRICS` that apply to one task of this
            kind; the first is the headline; empty = the default for the kind.
        weight: ``w_i`` in ``sum_i w_i L_i`` (finite, ``> 0``).
        description: natural-language descriptor of the task (for text encoders).
        metadata: metadata descriptor vector (every task of a data set has the same length).

    Example:
        >>> spec = TaskSpec("income", "binary", 1, description="income above $50K")
        >>> spec.loss, spec.metrics
        ('bce', ('auc', 'accuracy'))
    """

    name: str
    kind: TaskKind
    num_outputs: int
    loss: str = ""
    metrics: tuple[str, ...] = ()
    weight: float = 1.0
    description: str = ""
    metadata: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"TaskSpec.name must be a non-empty string, got {self.name!r}")
        where = f"TaskSpec {self.name!r}"
        if self.kind not in _KINDS:
            raise ValueError(f"{where}: kind must be one of {_KINDS}, got {self.kind!r}")
        n = self.num_outputs
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{where}: num_outputs must be a positive int, got {n!r}")
        if self.kind == "multiclass" and n < 2:
            raise ValueError(f"{where}: a multiclass task needs num_outputs >= 2 classes, got {n}")
        if self.kind == "binary" and n != 1:
            raise ValueError(
                f"{where}: a binary task has num_outputs=1 (one logit), got {n}; use "
                "kind='multiclass' for several classes"
            )
        loss = self.loss or DEFAULT_LOSS[self.kind]
        if loss not in LOSSES:
            raise ValueError(f"{where}: loss must be one of {tuple(LOSSES)}, got {loss!r}")
        if self.kind not in LOSSES[loss]:
            raise ValueError(
                f"{where}: loss {loss!r} does not fit a {self.kind} task; use "
                f"{DEFAULT_LOSS[self.kind]!r}"
            )
        metrics = tuple(self.metrics) or DEFAULT_METRICS[self.kind]
        for m in metrics:
            metric = get_metric(m)
            if self.kind not in metric.kinds or metric.scope != "task":
                fits = [k for k, v in METRICS.items() if self.kind in v.kinds and v.scope == "task"]
                raise ValueError(
                    f"{where}: metric {m!r} does not apply to one {self.kind} task; valid: {fits}"
                    + (
                        " (label-set metrics go in MultiTaskData.label_set_metrics)"
                        if metric.scope == "label_set"
                        else ""
                    )
                )
        weight = float(self.weight)
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"{where}: weight must be finite and > 0, got {self.weight!r}")
        if not isinstance(self.description, str):
            raise ValueError(f"{where}: description must be a string, got {self.description!r}")
        try:
            metadata = tuple(float(v) for v in self.metadata)
        except (TypeError, ValueError):
            raise ValueError(
                f"{where}: metadata must be a sequence of numbers, got {self.metadata!r}"
            ) from None
        if not all(math.isfinite(v) for v in metadata):
            raise ValueError(f"{where}: metadata must be finite, got {metadata}")
        object.__setattr__(self, "loss", loss)
        object.__setattr__(self, "metrics", metrics)
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "metadata", metadata)

    def __repr__(self) -> str:
        extra = "" if self.weight == 1.0 else f", weight={self.weight}"
        return (
            f"TaskSpec(name={self.name!r}, kind={self.kind!r}, num_outputs={self.num_outputs}, "
            f"loss={self.loss!r}, metrics={self.metrics!r}{extra})"
        )

    @property
    def headline(self) -> str:
        """The task's main metric (the first of :attr:`metrics`)."""
        return self.metrics[0]


@dataclass(frozen=True)
class TaskData:
    """One task's examples in one split.

    Attributes:
        x: ``[n, *input_shape]`` ``float32`` (or ``uint8`` images, see :func:`to_float`).
        y: ``[n]`` ``int64`` (multiclass), ``[n]`` ``float32`` 0/1 (binary) or ``[n, d]``
            ``float32`` (regression).

    Example:
        >>> len(TaskData(torch.zeros(3, 2), torch.tensor([0, 1, 1])))
        3
    """

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.x, Tensor) or not isinstance(self.y, Tensor):
            raise TypeError(
                f"TaskData.x and .y must be tensors, got {type(self.x).__name__} and "
                f"{type(self.y).__name__}"
            )
        if self.x.dim() < 1 or self.y.dim() < 1 or self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"TaskData: x {tuple(self.x.shape)} and y {tuple(self.y.shape)} must have the "
                "same number of rows (examples)"
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        return (
            f"TaskData(x={tuple(self.x.shape)} {self.x.dtype}, y={tuple(self.y.shape)} "
            f"{self.y.dtype})"
        )


def _check_labels(spec: TaskSpec, data: TaskData, where: str) -> None:
    y = data.y
    if spec.kind == "multiclass":
        if y.dtype != torch.int64 or y.dim() != 1:
            raise ValueError(
                f"{where}: multiclass labels must be int64 [n], got {y.dtype} {tuple(y.shape)}"
            )
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= spec.num_outputs):
            raise ValueError(
                f"{where}: class ids must be in 0..{spec.num_outputs - 1}, found "
                f"{int(y.min())}..{int(y.max())}"
            )
    elif spec.kind == "binary":
        if not y.is_floating_point() or y.dim() != 1:
            raise ValueError(
                f"{where}: binary labels must be float [n] of 0/1, got {y.dtype} {tuple(y.shape)}"
            )
        if bool(((y != 0) & (y != 1)).any()):
            raise ValueError(f"{where}: binary labels must be 0 or 1")
    else:
        if not y.is_floating_point() or y.dim() != 2 or y.shape[1] != spec.num_outputs:
            raise ValueError(
                f"{where}: regression targets must be float [n, {spec.num_outputs}], got "
                f"{y.dtype} {tuple(y.shape)}"
            )
        if not bool(torch.isfinite(y).all()):
            raise ValueError(f"{where}: regression targets must be finite")


@dataclass(frozen=True)
class MultiTaskData:
    """A multi-task data set: ``K`` task specs and their train / validation / test data.

    Attributes:
        name: the data set's name (its registry name).
        tasks: ``K`` :class:`TaskSpec`, unique names.
        train: ``K`` :class:`TaskData`, in the order of ``tasks``.
        val: ``K`` :class:`TaskData` (may hold 0 examples).
        test: ``K`` :class:`TaskData`.
        input_shape: the shape of one example, e.g. ``(1, 28, 28)`` or ``(103,)``.
        shared_inputs: every task of a split holds the same ``x`` tensor object (multi-label
            data): one forward pass can serve every task's loss.
        label_set_metrics: metrics over all tasks at once (``[n, K]`` outputs vs targets,
            e.g. ``hamming_loss``, ``micro_f1``, ``macro_f1``); only for ``shared_inputs``
            data whose tasks are all binary.

    Example:
        >>> x = torch.randn(4, 3)
        >>> data = MultiTaskData(
        ...     "toy",
        ...     (TaskSpec("a", "binary", 1), TaskSpec("b", "regression", 1)),
        ...     train=(TaskData(x, torch.tensor([0.0, 1, 1, 0])), TaskData(x, torch.ones(4, 1))),
        ...     val=(TaskData(x[:0], torch.zeros(0)), TaskData(x[:0], torch.zeros(0, 1))),
        ...     test=(TaskData(x, torch.tensor([1.0, 1, 0, 0])), TaskData(x, torch.zeros(4, 1))),
        ...     input_shape=(3,),
        ...     shared_inputs=False,
        ... )
        >>> data.num_tasks, data.task_names, data.sizes("train")
        (2, ('a', 'b'), (4, 4))
    """

    name: str
    tasks: tuple[TaskSpec, ...]
    train: tuple[TaskData, ...]
    val: tuple[TaskData, ...]
    test: tuple[TaskData, ...]
    input_shape: tuple[int, ...]
    shared_inputs: bool
    label_set_metrics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = f"MultiTaskData {self.name!r}"
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "label_set_metrics", tuple(self.label_set_metrics))
        if not self.tasks or not all(isinstance(t, TaskSpec) for t in self.tasks):
            raise ValueError(f"{where}: tasks must be a non-empty sequence of TaskSpec")
        names = [t.name for t in self.tasks]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"{where}: task names must be unique, repeated: {dup}")
        lengths = {len(t.metadata) for t in self.tasks}
        if len(lengths) > 1:
            raise ValueError(
                f"{where}: every task's metadata must have the same length, found {sorted(lengths)}"
            )
        for split in ("train", "val", "test"):
            parts = tuple(getattr(self, split))
            object.__setattr__(self, split, parts)
            if len(parts) != len(self.tasks):
                raise ValueError(
                    f"{where}: {split} has {len(parts)} TaskData for {len(self.tasks)} tasks; "
                    "give one per task, in the order of tasks"
                )
            for spec, data in zip(self.tasks, parts, strict=True):
                at = f"{where}, {split} of task {spec.name!r}"
                if not isinstance(data, TaskData):
                    raise ValueError(f"{at}: expected TaskData, got {type(data).__name__}")
                if tuple(data.x.shape[1:]) != self.input_shape:
                    raise ValueError(
                        f"{at}: x has example shape {tuple(data.x.shape[1:])}, expected "
                        f"input_shape {self.input_shape}"
                    )
                if data.x.dtype not in (torch.float32, torch.uint8):
                    raise ValueError(f"{at}: x must be float32 or uint8, got {data.x.dtype}")
                _check_labels(spec, data, at)
            if self.shared_inputs and any(d.x is not parts[0].x for d in parts):
                raise ValueError(
                    f"{where}: shared_inputs=True but the tasks of {split} do not hold the same "
                    "x tensor object; pass one tensor for every task"
                )
        for m in self.label_set_metrics:
            metric = get_metric(m)
            if metric.scope != "label_set":
                raise ValueError(
                    f"{where}: {m!r} is a per-task metric; label_set_metrics takes "
                    f"{[k for k, v in METRICS.items() if v.scope == 'label_set']}"
                )
        if self.label_set_metrics and not (
            self.shared_inputs and all(t.kind == "binary" for t in self.tasks)
        ):
            raise ValueError(
                f"{where}: label_set_metrics need shared_inputs=True and binary tasks only"
            )

    @property
    def num_tasks(self) -> int:
        """``K``."""
        return len(self.tasks)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    def split(self, name: Split) -> tuple[TaskData, ...]:
        """The ``K`` task data of split ``"train"``, ``"val"`` or ``"test"``."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        parts: tuple[TaskData, ...] = getattr(self, name)
        return parts

    def sizes(self, split: Split) -> tuple[int, ...]:
        """Examples per task in ``split``."""
        return tuple(len(d) for d in self.split(split))

    def metadata(self) -> Tensor:
        """``float32 [K, M]``: every task's metadata vector (``M`` may be 0)."""
        m = len(self.tasks[0].metadata)
        rows = [t.metadata for t in self.tasks]
        return torch.tensor(rows, dtype=torch.float32).reshape(self.num_tasks, m)

    def descriptions(self) -> tuple[str, ...]:
        """Every task's natural-language description."""
        return tuple(t.description for t in self.tasks)

    def __repr__(self) -> str:
        kinds = sorted({t.kind for t in self.tasks})
        return (
            f"MultiTaskData({self.name!r}, tasks={self.num_tasks} {'/'.join(kinds)}, "
            f"input_shape={self.input_shape}, shared_inputs={self.shared_inputs}, "
            f"train={sum(self.sizes('train'))}, val={sum(self.sizes('val'))}, "
            f"test={sum(self.sizes('test'))})"
        )


def stack_labels(parts: Sequence[TaskData]) -> Tensor:
    """``[n, K]`` labels of ``K`` binary tasks that share their inputs (for label-set metrics).

    Example:
        >>> x = torch.zeros(2, 1)
        >>> stack_labels([TaskData(x, torch.tensor([0.0, 1.0])), TaskData(x, torch.ones(2))])
        tensor([[0., 1.],
                [1., 1.]])
    """
    return torch.stack([p.y.reshape(-1) for p in parts], dim=1)
