"""Meta-test evaluation: the mean of a per-task metric and its 95% confidence interval."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from manytask.objectives import Objective, get_objective
from manytask.progress import progress_bar

__all__ = ["Score", "evaluate", "mean_ci95"]


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

    @classmethod
    def of(cls, values: Sequence[float], objective: Objective) -> Score:
        """The score of per-task ``values`` of ``objective``'s metric."""
        mean, ci, std = mean_ci95(values)
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
        )

    def __str__(self) -> str:
        if self.unit == "%":
            text = f"{self.mean:.2f} +- {self.ci95:.2f}%"
        else:
            text = f"{self.metric.upper()} {self.mean:.4g} +- {self.ci95:.2g}"
        return f"{text} (95% CI, {self.n} tasks)"

    def as_dict(self) -> dict[str, Any]:
        """The summary (no per-task values), for ``metrics.jsonl`` and ``results.json``."""
        return {
            "metric": self.metric,
            "mean": self.mean,
            "ci95": self.ci95,
            "std": self.std,
            "tasks": self.n,
            "label": self.label,
            "higher_is_better": self.higher_is_better,
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
    total = getattr(batches, "num_episodes", None)
    try:
        with progress_bar(total=total, desc=desc, enabled=progress, unit="task") as bar:
            for batch in batches:
                pred = learner(batch.support_x, batch.support_y, batch.query_x, ways=batch.ways)
                part = obj.per_task(pred, batch.query_y).cpu().tolist()
                values.extend(part)
                bar.update(len(part))
                bar.set_postfix(**{obj.metric: f"{sum(values) / len(values):.4g}"})
    finally:
        learner.train(was_training)
    return Score.of(values, obj)
