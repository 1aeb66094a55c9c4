"""``Delta_m``: how much a multi-task model gains (or loses) against single-task baselines.

For each task ``t`` and each of its metrics ``i`` (value ``M_{m,t,i}`` for the multi-task
model, ``M_{b,t,i}`` for the baseline, typically one network per task), the signed relative
difference is::

    r_{t,i} = (-1)^{s_{t,i}} (M_{m,t,i} - M_{b,t,i}) / M_{b,t,i}

with ``s_{t,i} = 1`` when lower is better (an error, an MSE) and 0 when higher is better (an
accuracy, an AUC), so ``r > 0`` always means *better than the baseline*. Two published
definitions combine them differently:

``libmtl`` (the default): Lin & Zhang, LibMTL (JMLR 2023), after Maninis et al. (CVPR 2019)::

    Delta_m = 100% * (1/T) sum_t (1/N_t) sum_i r_{t,i}

the mean over tasks of the mean over each task's ``N_t`` metrics; positive = better. Every
task counts once, however many metrics it reports.

``nash_mtl``: Navon et al., "Multi-task learning as a bargaining game" (ICML 2022), section 6::

    Delta_m = 100% * (1/K) sum_k (-1)^{delta_k} (M_{m,k} - M_{b,k}) / M_{b,k} = -mean_k r_k

the mean over all ``K`` metrics of all tasks pooled (a task with more metrics weighs more),
with ``delta_k = 1`` when higher is better, so it is the *performance drop*: **lower = better**
(negative = better than the baseline). The two agree in magnitude (opposite sign) when every
task has the same number of metrics.

Only per-task metrics enter (the metrics of each task spec); metrics over the whole label set
(Hamming loss, micro-/macro-F1) are reported beside ``Delta_m``, not in it. A baseline value of
0 makes the relative difference undefined and is an error that names the task and metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["DEFINITIONS", "Definition", "DeltaM", "delta_m", "signed_relative_differences"]

Definition = Literal["libmtl", "nash_mtl"]
DEFINITIONS: tuple[str, ...] = get_args(Definition)

Values = Mapping[str, Mapping[str, float]]  # {task: {metric: value}}


@dataclass(frozen=True)
class DeltaM:
    """A ``Delta_m`` value in percent, its definition and the per-task parts.

    Attributes:
        value: ``Delta_m`` in percent.
        definition: ``"libmtl"`` (positive = better) or ``"nash_mtl"`` (lower = better).
        per_task: ``{task: 100 * mean_i r_{t,i}}`` (positive = better, for both definitions).
        metrics: how many (task, metric) pairs entered.
    """

    value: float
    definition: Definition
    per_task: dict[str, float]
    metrics: int

    @property
    def higher_is_better(self) -> bool:
        return self.definition == "libmtl"

    def __str__(self) -> str:
        direction = "higher is better" if self.higher_is_better else "lower is better"
        return f"Delta_m {self.value:+.2f}% ({self.definition}, {direction})"

    def as_dict(self) -> dict[str, object]:
        return {
            "value": self.value,
            "definition": self.definition,
            "higher_is_better": self.higher_is_better,
            "per_task": self.per_task,
            "metrics": self.metrics,
        }


def signed_relative_differences(
    model: Values, baseline: Values, directions: Mapping[str, bool]
) -> dict[str, dict[str, float]]:
    """``r_{t,i}`` for every task and metric of ``model`` (positive = better than baseline).

    Args:
        model: ``{task: {metric: value}}`` of the multi-task model.
        baseline: the same for the baseline; must cover every task and metric of ``model``.
        directions: ``{metric: higher_is_better}``.

    Raises:
        ValueError: a task or metric missing from the baseline, a baseline value of 0, or a
            value that is not finite.
    """
    out: dict[str, dict[str, float]] = {}
    for task, values in model.items():
        if task not in baseline:
            raise ValueError(
                f"Delta_m: the baseline has no result for task {task!r} (it has "
                f"{', '.join(baseline) or 'none'}); give baseline runs that cover every task"
            )
        out[task] = {}
        for metric, m in values.items():
            if metric not in baseline[task]:
                raise ValueError(f"Delta_m: the baseline of task {task!r} has no {metric!r}")
            b = float(baseline[task][metric])
            if not (math.isfinite(b) and math.isfinite(float(m))):
                raise ValueError(
                    f"Delta_m: {metric} of task {task!r} is not finite (model {m}, baseline {b})"
                )
            if b == 0:
                raise ValueError(
                    f"Delta_m: the baseline's {metric} of task {task!r} is 0, so the relative "
                    "difference is undefined"
                )
            sign = 1.0 if directions[metric] else -1.0
            out[task][metric] = sign * (float(m) - b) / b
    return out


def delta_m(
    model: Values,
    baseline: Values,
    directions: Mapping[str, bool],
    definition: Definition = "libmtl",
) -> DeltaM:
    """``Delta_m`` (in %) of ``model`` against ``baseline``.

    Args:
        model: ``{task: {metric: value}}``.
        baseline: the same for the single-task baselines.
        directions: ``{metric: higher_is_better}``.
        definition: ``"libmtl"`` (mean over tasks of the per-task mean; positive = better) or
            ``"nash_mtl"`` (mean over all metrics, sign flipped; lower = better).

    Example:
        >>> model = {"a": {"acc": 90.0}, "b": {"mse": 0.5, "mae": 0.6}}
        >>> base = {"a": {"acc": 80.0}, "b": {"mse": 1.0, "mae": 0.5}}
        >>> dirs = {"acc": True, "mse": False, "mae": False}
        >>> round(delta_m(model, base, dirs).value, 4)   # (12.5 + (50 - 20) / 2) / 2
        13.75
        >>> round(delta_m(model, base, dirs, "nash_mtl").value, 4)   # -(12.5 + 50 - 20) / 3
        -14.1667
    """
    if definition not in DEFINITIONS:
        raise ValueError(f"Delta_m definition must be one of {DEFINITIONS}; got {definition!r}")
    if not model:
        raise ValueError("Delta_m: no task results to compare")
    r = signed_relative_differences(model, baseline, directions)
    per_task = {t: 100.0 * sum(v.values()) / len(v) for t, v in r.items() if v}
    pooled = [x for v in r.values() for x in v.values()]
    if not pooled:
        raise ValueError("Delta_m: the tasks report no metrics")
    if definition == "libmtl":
        value = sum(per_task.values()) / len(per_task)
    else:
        value = -100.0 * sum(pooled) / len(pooled)
    return DeltaM(value, definition, per_task, len(pooled))
