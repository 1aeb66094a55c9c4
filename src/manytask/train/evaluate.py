"""Meta-test evaluation: the mean of a per-task metric and its 95% confidence interval."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from manytask.objectives import Objective, get_objective
from manytask.progress import progress_bar

__all__ = ["Score", "TaskScores", "evaluate", "evaluate_tasks", "mean_ci95"]


@dataclass(frozen=True)
class Score:
    """A metric over ``n`` tasks: its mean, 95% CI and standard deviation, in reported units.

    ``ci95 = 1.96 * std / sqrt(n)`` with ``std`` the standard deviation of the per-task values
    (population form, as in the ProtoNets and MAML evaluation code).

    Attributes:
        metric: the metric's key (``"acc"``, ``"mse"``).
        mean: the mean over tasks.
        ci95: half-width of the 95% confidence interval of the mean.
        std: standard deviation over tasks.
        n: the number of tasks.
        per_task: every task's value.
        label: how reports name the metric (``"accuracy (%)"``).
        higher_is_better: the metric's direction.
        unit: ``"%"`` or ``""``.
        breakdown: the objective's extra metrics (:meth:`Objective.breakdown`), each
            ``{"mean", "ci95", "std", "tasks"}`` over the tasks that have a value.
    """

    metric: str
    mean: float
    ci95: float
    std: float
    n: int
    per_task: tuple[float, ...]
    label: str = ""
    higher_is_better: bool = True
    unit: str = ""
    breakdown: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        values: Sequence[float],
        objective: Objective,
        breakdown: Mapping[str, Sequence[float]] | None = None,
    ) -> Score:
        """The score of per-task ``values`` of ``objective``'s metric (and its breakdown)."""
        mean, ci, std = mean_ci95(values)
        extra: dict[str, dict[str, float]] = {}
        for name, vals in (breakdown or {}).items():
            kept = [float(v) for v in vals if not math.isnan(float(v))]
            if kept:
                m, c, s = mean_ci95(kept)
                extra[name] = {"mean": m, "ci95": c, "std": s, "tasks": len(kept)}
        return cls(
            metric=objective.metric,
            mean=mean,
            ci95=ci,
            std=std,
            n=len(values),
            per_task=tuple(float(v) for v in values),
            label=objective.metric_label,
            higher_is_better=objective.higher_is_better,
            unit=objective.unit,
            breakdown=extra,
        )

    def __str__(self) -> str:
        if self.unit == "%":
            text = f"{self.mean:.2f} +- {self.ci95:.2f}%"
        else:
            text = f"{self.metric.upper()} {self.mean:.4g} +- {self.ci95:.2g}"
        return f"{text} (95% CI, {self.n} tasks)"

    def as_dict(self) -> dict[str, Any]:
        """The summary (no per-task values), for ``metrics.jsonl`` and ``results.json``."""
        extra = {"breakdown": self.breakdown} if self.breakdown else {}
        return {
            "metric": self.metric,
            "mean": self.mean,
            "ci95": self.ci95,
            "std": self.std,
            "tasks": self.n,
            "label": self.label,
            "higher_is_better": self.higher_is_better,
            **extra,
        }


def mean_ci95(values: Iterable[float]) -> tuple[float, float, float]:
    """Mean, ``1.96 * std / sqrt(n)`` and std of ``values`` (std with ``ddof=0``)."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_ci95 needs at least one value")
    n = len(xs)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / n)
    return mean, 1.96 * std / math.sqrt(n), std


@torch.no_grad()
def evaluate(
    learner: nn.Module,
    batches: Iterable[Any],
    objective: Objective | str = "classification",
    *,
    progress: bool = True,
    desc: str = "eval",
) -> Score:
    """The score of ``learner`` on every task of ``batches``.

    Args:
        learner: a meta-learner, called as ``learner(support_x, support_y, query_x, ways=...)``.
        batches: an iterable of task batches (:class:`~manytask.data.Episode` or
            :class:`~manytask.data.RegressionEpisode`), e.g. fixed evaluation episodes; when
            it has ``num_episodes``, the progress bar counts tasks against it.
        objective: the objective (or its name) whose metric is reported.
        progress: show progress.
        desc: the progress label.

    The learner is put in eval mode for the pass and restored to its previous mode after.

    Example:
        >>> from manytask.data import ImageStore, fixed_episodes
        >>> from manytask.meta import ProtoNet
        >>> from manytask.nn import Conv4
        >>> store = ImageStore(
        ...     images=torch.randint(0, 256, (8, 6, 28, 28), dtype=torch.uint8),
        ...     class_names=tuple(f"A/c{i}" for i in range(8)), alphabets=("A",),
        ...     alphabet_of=torch.zeros(8, dtype=torch.long),
        ...     drawers=torch.zeros(8, 6, dtype=torch.long), source="random",
        ... )
        >>> test = fixed_episodes(store, 5, 1, 2, num_episodes=6, batch_size=4)
        >>> score = evaluate(ProtoNet(Conv4(hidden=8)), test, progress=False)
        >>> score.n, score.metric
        (6, 'acc')
    """
    obj = get_objective(objective) if isinstance(objective, str) else objective
    was_training = learner.training
    learner.eval()
    values: list[float] = []
    extra: dict[str, list[float]] = {}
    total = getattr(batches, "num_episodes", None)
    try:
        with progress_bar(total=total, desc=desc, enabled=progress, unit="task") as bar:
            for batch in batches:
                pred = learner(batch.support_x, batch.support_y, batch.query_x, ways=batch.ways)
                part = obj.per_task(pred, batch.query_y).cpu().tolist()
                for name, v in obj.breakdown(pred, batch.query_y).items():
                    extra.setdefault(name, []).extend(v.cpu().tolist())
                values.extend(part)
                bar.update(len(part))
                bar.set_postfix(**{obj.metric: f"{sum(values) / len(values):.4g}"})
    finally:
        learner.train(was_training)
    return Score.of(values, obj, extra)


# --- multi-task evaluation --------------------------------------------------------------------


@dataclass(frozen=True)
class TaskScores:
    """Every task's metrics on one split, and their mean and 95% CI over the tasks.

    Attributes:
        split: ``"val"`` or ``"test"``.
        per_task: ``{task: {metric: value}}`` (each task's own metrics, in spec order).
        label_set: ``{metric: value}`` of metrics over all tasks at once (multi-label data:
            Hamming loss, micro-/macro-F1); empty otherwise.
        examples: ``{task: examples evaluated}``.
        directions: ``{metric: higher_is_better}`` for every metric that appears.

    The summary of a metric (:meth:`summary`) is over the tasks that have it: mean,
    ``1.96 * std / sqrt(n)`` and std (``ddof=0``), as :func:`mean_ci95`.
    """

    split: str
    per_task: dict[str, dict[str, float]]
    label_set: dict[str, float]
    examples: dict[str, int]
    directions: dict[str, bool]

    def metrics(self) -> list[str]:
        """Every per-task metric name, in order of first appearance."""
        out: list[str] = []
        for values in self.per_task.values():
            out += [m for m in values if m not in out]
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        """``{metric: {mean, ci95, std, tasks, higher_is_better}}`` over the tasks."""
        out = {}
        for m in self.metrics():
            values = [v[m] for v in self.per_task.values() if m in v and math.isfinite(v[m])]
            if not values:
                continue
            mean, ci, std = mean_ci95(values)
            out[m] = {
                "mean": mean,
                "ci95": ci,
                "std": std,
                "tasks": len(values),
                "higher_is_better": self.directions[m],
            }
        return out

    def as_dict(self) -> dict[str, Any]:
        """Everything, for ``results.json``."""
        return {
            "split": self.split,
            "per_task": self.per_task,
            "label_set": self.label_set,
            "summary": self.summary(),
            "examples": self.examples,
        }

    def log_record(self) -> dict[str, float]:
        """Flat ``{task/metric: value, mean/metric: value, label_set_metric: value}``."""
        rec = {f"{t}/{m}": v for t, values in self.per_task.items() for m, v in values.items()}
        rec.update({f"mean/{m}": s["mean"] for m, s in self.summary().items()})
        rec.update(self.label_set)
        return rec


def _metric_value(name: str, output: torch.Tensor, target: torch.Tensor) -> float:
    from manytask.metrics import get_metric

    try:
        return get_metric(name)(output, target)
    except ValueError:  # e.g. AUC of a split with one class only: undefined, reported as NaN
        return float("nan")


@torch.no_grad()
def evaluate_tasks(
    model: Any,
    data: Any,
    split: str = "test",
    *,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> TaskScores:
    """Every task's metrics (its spec's ``metrics``) on the whole ``split`` of ``data``.

    Args:
        model: a multi-task model, ``model.forward_tasks(xs, tasks)``.
        data: a :class:`~manytask.data.MultiTaskData`.
        split: ``"val"`` or ``"test"`` (or ``"train"``).
        batch_size: examples per forward pass.
        device: where to run (default: the model's device).

    Tasks that share their inputs are evaluated together (the shared trunk runs once per
    batch). A task with no examples in the split is left out. The model is put in eval mode
    for the pass and restored after.

    Example:
        >>> from types import SimpleNamespace as T
        >>> from manytask.data import MultiTaskData, TaskData, TaskSpec
        >>> from manytask.nn import build_conditioning
        >>> x = torch.randn(6, 3)
        >>> specs = (TaskSpec("a", "binary", 1), TaskSpec("b", "regression", 1))
        >>> y = torch.tensor([0.0, 1, 0, 1, 0, 1])
        >>> parts = (TaskData(x, y), TaskData(x, torch.zeros(6, 1)))
        >>> data = MultiTaskData("toy", specs, parts, parts, parts, (3,), shared_inputs=True)
        >>> model = build_conditioning("multi_head", specs, (3,), backbone_args={"hidden": (4,)})
        >>> scores = evaluate_tasks(model, data, "test")
        >>> list(scores.per_task["a"]), list(scores.per_task["b"])
        (['auc', 'accuracy'], ['mse', 'mae'])
    """
    from manytask.data.multitask import stack_labels, to_float
    from manytask.metrics import get_metric

    if device is None:
        ref = next(iter(model.parameters()), None)
        device = ref.device if ref is not None else torch.device("cpu")
    parts = data.split(split)
    specs = data.tasks
    was_training = model.training
    model.eval()
    outputs: list[torch.Tensor | None] = [None] * len(specs)
    try:
        if data.shared_inputs:
            x_all = parts[0].x
            chunks: list[list[torch.Tensor]] = [[] for _ in specs]
            for start in range(0, len(x_all), batch_size):
                x = to_float(x_all[start : start + batch_size].to(device))
                outs = model.forward_tasks([x] * len(specs), list(range(len(specs))))
                for i, o in enumerate(outs):
                    chunks[i].append(o.float().cpu())
            if len(x_all):
                outputs = [torch.cat(c) for c in chunks]
        else:
            for i, part in enumerate(parts):
                if not len(part):
                    continue
                outs_i = []
                for start in range(0, len(part), batch_size):
                    x = to_float(part.x[start : start + batch_size].to(device))
                    outs_i.append(model(x, i).float().cpu())
                outputs[i] = torch.cat(outs_i)
    finally:
        model.train(was_training)
    per_task: dict[str, dict[str, float]] = {}
    directions: dict[str, bool] = {}
    examples: dict[str, int] = {}
    for spec, part, out in zip(specs, parts, outputs, strict=True):
        if out is None or not len(part):
            continue
        y = part.y
        per_task[spec.name] = {m: _metric_value(m, out, y) for m in spec.metrics}
        examples[spec.name] = len(part)
        for m in spec.metrics:
            directions[m] = get_metric(m).higher_is_better
    label_set: dict[str, float] = {}
    if data.label_set_metrics and all(o is not None for o in outputs):
        logits = torch.cat([o.reshape(o.shape[0], -1) for o in outputs if o is not None], dim=1)
        labels = stack_labels(parts)
        for m in data.label_set_metrics:
            label_set[m] = _metric_value(m, logits, labels)
            directions[m] = get_metric(m).higher_is_better
    return TaskScores(split, per_task, label_set, examples, directions)
