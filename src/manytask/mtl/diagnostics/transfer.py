"""The negative-transfer report: each task's multi-task result against its single-task baseline.

Negative transfer (CS330, multi-task basics) is when training tasks together makes a task
*worse* than training it alone. For every task and metric this module compares the multi-task
runs' values with the single-task runs' values over seeds: the difference of the means (signed
so that positive = multi-task better, by the metric's direction), its 95% confidence interval
(Welch: the two seed samples' variances, Student's t with Welch-Satterthwaite degrees of
freedom), and a flag: ``worse`` when the whole interval says multi-task is worse, ``better``
when it says better, else ``unclear`` (with one seed per side there is no interval, and the
sign alone is reported as ``worse?`` / ``better?``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["TransferRow", "negative_transfer", "transfer_table"]

_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def _t95(df: float) -> float:
    if df >= len(_T95):
        return 1.96
    lo = max(math.floor(df), 1)
    return _T95[lo - 1]  # conservative: round the degrees of freedom down


def _mean_var(xs: Sequence[float]) -> tuple[float, float]:
    n = len(xs)
    mean = sum(xs) / n
    var = sum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else math.nan
    return mean, var


@dataclass(frozen=True)
class TransferRow:
    """One task's comparison (``gain`` > 0: multi-task better, in the metric's units)."""

    task: str
    metric: str
    multi: float
    single: float
    gain: float
    ci95: float
    seeds: tuple[int, int]
    verdict: str


def negative_transfer(
    multi: Mapping[str, Sequence[float]],
    single: Mapping[str, Sequence[float]],
    *,
    metric: str,
    higher_is_better: bool,
) -> list[TransferRow]:
    """Compare per-task values over seeds (``{task: [value per seed]}``) of multi vs single.

    Example:
        >>> rows = negative_transfer({"a": [0.920, 0.925, 0.930], "b": [0.70, 0.71, 0.69]},
        ...                          {"a": [0.880, 0.885, 0.890], "b": [0.80, 0.81, 0.79]},
        ...                          metric="accuracy", higher_is_better=True)
        >>> [(r.task, round(r.gain, 3), r.verdict) for r in rows]
        [('a', 0.04, 'better'), ('b', -0.1, 'worse')]
    """
    rows = []
    for task in multi:
        if task not in single:
            raise ValueError(f"task {task!r} has no single-task baseline; give one per task")
        m, s = [float(v) for v in multi[task]], [float(v) for v in single[task]]
        if not m or not s:
            raise ValueError(f"task {task!r}: need at least one value on each side")
        mm, mv = _mean_var(m)
        sm, sv = _mean_var(s)
        sign = 1.0 if higher_is_better else -1.0
        gain = sign * (mm - sm)
        if len(m) > 1 and len(s) > 1:
            a, b = mv / len(m), sv / len(s)
            se = math.sqrt(a + b)
            df = (a + b) ** 2 / ((a * a) / (len(m) - 1) + (b * b) / (len(s) - 1)) if se > 0 else 1e9
            ci = _t95(df) * se
            verdict = "worse" if gain + ci < 0 else "better" if gain - ci > 0 else "unclear"
        else:
            ci = math.nan
            verdict = "worse?" if gain < 0 else "better?" if gain > 0 else "unclear"
        rows.append(TransferRow(task, metric, mm, sm, gain, ci, (len(m), len(s)), verdict))
    return rows


def transfer_table(rows: Sequence[TransferRow]) -> str:
    """A markdown table of the rows, negative transfer in bold."""
    lines = [
        "| task | metric | multi-task | single-task | gain (multi - single) | 95% CI | seeds | |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        ci = "" if math.isnan(r.ci95) else f"± {r.ci95:.3g}"
        flag = f"**{r.verdict}**" if r.verdict.startswith("worse") else r.verdict
        lines.append(
            f"| {r.task} | {r.metric} | {r.multi:.4g} | {r.single:.4g} | {r.gain:+.3g} | {ci} | "
            f"{r.seeds[0]} / {r.seeds[1]} | {flag} |"
        )
    return "\n".join(lines)
