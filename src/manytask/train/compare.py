"""Compare multi-task runs side by side: one table, one bar chart, ``Delta_m`` against a baseline.

``manytask compare RUN_DIR... [--baseline RUN_DIR...]`` reads each run's ``results.json``.
Runs whose configs differ only in their seed (and name, description, device, quiet and
baseline) form one column: its cells are the mean over the seeds with a 95% confidence
interval from Student's t with ``n - 1`` degrees of freedom (``t * std / sqrt(n)``, ``std``
with ``ddof=1``; a small number of seeds needs the t quantile, 4.30 for 3 seeds, not 1.96).

The baseline is one or more finished multi-task runs that together cover every task (a
single-task set from ``manytask run RECIPE --single-task``, an independent-networks run, or
one run per task); a task covered by several baseline runs (several seeds) takes their mean.
``Delta_m`` (:mod:`manytask.mtl.delta`) is computed for every run of a column against it and
averaged over the column's seeds.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manytask.config import load_config, to_dict
from manytask.mtl.delta import Definition, delta_m
from manytask.mtl.diagnostics.transfer import TransferRow, negative_transfer, transfer_table
from manytask.train.rundir import RunDir
from manytask.typed import ConfigError, ManytaskError

__all__ = [
    "Column",
    "Comparison",
    "baseline_values",
    "compare_runs",
    "read_results",
    "seed_ci95",
    "write_comparison",
]

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def seed_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and 95% CI half-width over seeds (Student's t, ``ddof=1``; 0 for one value).

    Example:
        >>> mean, ci = seed_ci95([1.0, 2.0, 3.0])
        >>> mean, round(ci, 3)     # 4.303 * 1 / sqrt(3)
        (2.0, 2.484)
    """
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("seed_ci95 needs at least one value")
    mean = sum(xs) / n
    if n == 1:
        return mean, 0.0
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    if std <= 1e-12 * max(1.0, abs(mean)):  # identical values up to rounding
        std = 0.0
    t = _T95[n - 2] if n - 1 <= len(_T95) else 1.96
    return mean, t * std / math.sqrt(n)


def read_results(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``results.json`` of a finished multi-task run (or single-task set).

    Raises:
        FileNotFoundError: not a run folder, or the run has not finished.
        ManytaskError: the run is not a multi-task run.
    """
    run = RunDir(run_dir, writer=False)
    path = run.path / "results.json"
    if not path.exists():
        if not run.path.is_dir():
            raise FileNotFoundError(f"{run.path}: no such run folder")
        raise FileNotFoundError(
            f"{run.path} has no results.json: the run has not finished. Resume it with "
            f"`manytask run --resume {run.path}`"
        )
    results = run.read_json("results.json")
    if results.get("family") != "mtl":
        raise ManytaskError(
            f"{run.path} is a {results.get('family', 'meta')!r} run; compare and Delta_m take "
            "multi-task runs (family: mtl)"
        )
    return results


def baseline_values(
    paths: Sequence[str | os.PathLike[str]], tasks: Sequence[str]
) -> dict[str, Any]:
    """Per-task test metrics of the baseline runs for ``tasks``.

    Returns:
        ``{"values": {task: {metric: mean over the runs covering it}}, "sources": {task:
        [run folders]}}``.

    Raises:
        ConfigError: a task no baseline run covers (naming the runs and what they cover).
    """
    sums: dict[str, dict[str, list[float]]] = {}
    sources: dict[str, list[str]] = {}
    covered: list[str] = []
    for p in paths:
        try:
            results = read_results(p)
        except (FileNotFoundError, ManytaskError) as exc:
            raise ConfigError(f"eval.baseline: {exc}") from None
        for task, values in results["test"]["per_task"].items():
            covered.append(task)
            if task not in tasks:
                continue
            slot = sums.setdefault(task, {})
            for metric, v in values.items():
                slot.setdefault(metric, []).append(float(v))
            sources.setdefault(task, []).append(str(p))
    missing = [t for t in tasks if t not in sums]
    if missing:
        have = sorted(set(covered))
        raise ConfigError(
            f"eval.baseline: no baseline result for task(s) {', '.join(missing)} (the baseline "
            f"runs cover {', '.join(have) or 'nothing'}). Give baseline runs that cover every "
            "task, e.g. `manytask run RECIPE --single-task`."
        )
    values = {t: {m: sum(v) / len(v) for m, v in sums[t].items()} for t in tasks}
    per_run = {t: {m: list(v) for m, v in sums[t].items()} for t in tasks}
    return {"values": values, "per_run": per_run, "sources": {t: sources[t] for t in tasks}}


_NOT_COMPARED = ("seed", "name", "description", "device", "quiet")


def _normalised(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with today's defaults filled in, so a run saved before a setting existed pools
    with one that wrote the default out; as saved if today's schema no longer reads it."""
    try:
        return dict(to_dict(load_config(raw, [])))
    except (ManytaskError, ValueError, TypeError):
        return raw


def _group_key(run_dir: str | os.PathLike[str], results: dict[str, Any]) -> str:
    cfg = _normalised(dict(RunDir(run_dir, writer=False).read_config()))
    cfg["kind"] = results.get("kind", "multi_task")
    for key in _NOT_COMPARED:
        cfg.pop(key, None)
    ev = dict(cfg.get("eval") or {})
    ev.pop("baseline", None)
    cfg["eval"] = ev
    return repr(sorted(cfg.items(), key=lambda kv: kv[0]))


@dataclass
class Column:
    """Runs that differ only in their seed, and their results."""

    label: str
    runs: list[str] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)

    def values(self, task: str, metric: str) -> list[float]:
        out = []
        for r in self.results:
            v = r["test"]["per_task"].get(task, {}).get(metric)
            if v is not None and math.isfinite(v):
                out.append(float(v))
        return out

    def label_set(self, metric: str) -> list[float]:
        return [float(r["test"]["label_set"][metric]) for r in self.results
                if metric in r["test"].get("label_set", {})]  # fmt: skip


@dataclass
class Comparison:
    """Several runs (grouped into columns by config) with the rows of the comparison.

    Attributes:
        columns: one per group of runs differing only in seed.
        tasks: every task, in order of first appearance.
        metrics: ``{task: [metric, ...]}``.
        directions: ``{metric: higher_is_better}``.
        delta: ``{column label: (mean Delta_m, CI over seeds)}`` when a baseline is given.
        definition: the ``Delta_m`` definition.
        baseline: the baseline's per-task values (or ``None``).
    """

    columns: list[Column]
    tasks: list[str]
    metrics: dict[str, list[str]]
    directions: dict[str, bool]
    label_set: list[str]
    delta: dict[str, tuple[float, float]]
    definition: Definition
    baseline: dict[str, Any] | None

    def rows(self) -> list[tuple[str, list[str]]]:
        """``(row label, [cell per column (+ baseline)])`` of the table."""

        def cell(values: list[float]) -> str:
            if not values:
                return "-"
            mean, ci = seed_ci95(values)
            return f"{mean:.4g} ± {ci:.2g}" if len(values) > 1 else f"{mean:.4g}"

        out: list[tuple[str, list[str]]] = []
        base = self.baseline["values"] if self.baseline else None
        for task in self.tasks:
            for metric in self.metrics[task]:
                arrow = "↑" if self.directions[metric] else "↓"
                cells = [cell(c.values(task, metric)) for c in self.columns]
                if base is not None:
                    v = base.get(task, {}).get(metric)
                    cells.append("-" if v is None else f"{v:.4g}")
                out.append((f"{task} {metric} {arrow}", cells))
        all_metrics = [m for m in self.directions if any(m in v for v in self.metrics.values())]
        if len(self.tasks) > 1:
            for metric in all_metrics:
                arrow = "↑" if self.directions[metric] else "↓"
                cells = []
                for c in self.columns:
                    per_seed = []
                    for r in c.results:
                        vals = [v[metric] for v in r["test"]["per_task"].values()
                                if metric in v and math.isfinite(v[metric])]  # fmt: skip
                        if vals:
                            per_seed.append(sum(vals) / len(vals))
                    cells.append(cell(per_seed))
                if base is not None:
                    vals = [v[metric] for v in base.values() if metric in v]
                    cells.append(f"{sum(vals) / len(vals):.4g}" if vals else "-")
                out.append((f"mean {metric} {arrow}", cells))
        for metric in self.label_set:
            arrow = "↑" if self.directions[metric] else "↓"
            cells = [cell(c.label_set(metric)) for c in self.columns]
            if base is not None:
                cells.append("-")
            out.append((f"{metric} (label set) {arrow}", cells))
        params = [
            f"{c.results[0]['parameters']['shared']:,} / {c.results[0]['parameters']['total']:,}"
            for c in self.columns
        ]
        out.append(("parameters shared / total", [*params, *(["-"] if base is not None else [])]))
        if self.delta:
            arrow = "↑" if self.definition == "libmtl" else "↓"
            cells = []
            for c in self.columns:
                mean, ci = self.delta[c.label]
                cells.append(f"{mean:+.2f}" + (f" ± {ci:.2g}" if len(c.results) > 1 else ""))
            cells.append("0")
            out.append((f"Delta_m % ({self.definition}) {arrow}", cells))
        return out

    def headers(self) -> list[str]:
        heads = [f"{c.label} ({len(c.runs)} run{'s' if len(c.runs) > 1 else ''})"
                 for c in self.columns]  # fmt: skip
        if self.baseline is not None:
            heads.append("baseline")
        return heads

    def transfer(self) -> dict[str, list[TransferRow]]:
        """The negative-transfer report of every column against the baseline (empty without).

        Each task's headline metric (its first), the column's seeds against the baseline runs
        covering the task (several seeds of ``--single-task`` give the baseline its spread):
        :func:`manytask.mtl.diagnostics.negative_transfer` (gain, Welch 95% CI, verdict).
        """
        if self.baseline is None:
            return {}
        per_run = self.baseline["per_run"]
        out: dict[str, list[TransferRow]] = {}
        for c in self.columns:
            rows: list[TransferRow] = []
            for task in self.tasks:
                metric = self.metrics[task][0]
                multi, single = c.values(task, metric), per_run[task].get(metric, [])
                if multi and single:
                    rows += negative_transfer(
                        {task: multi}, {task: single}, metric=metric,
                        higher_is_better=self.directions[metric],
                    )  # fmt: skip
            out[c.label] = rows
        return out

    def by_run(self) -> tuple[list[str], list[list[str]]]:
        """The summary rows turned sideways: one row per column of runs (and the baseline),
        one column per mean metric, label-set metric and ``Delta_m`` (with three tasks or
        fewer, each task's headline metric first), and, with a baseline, the count of tasks
        better / worse than it. Returns ``(headers, rows)``.

        This is the table to read when many methods or models are compared on one data set.
        """
        rows = self.rows()
        summary = [(label, cells) for label, cells in rows
                   if label.startswith(("mean ", "Delta_m")) or "(label set)" in label]  # fmt: skip
        if len(self.tasks) <= 3:  # few tasks: each task's headline metric first
            headline = {f"{t} {self.metrics[t][0]} " for t in self.tasks}
            summary = [(label, cells) for label, cells in rows
                       if label.rsplit(" ", 1)[0] + " " in headline] + summary  # fmt: skip
        heads = ["run", *(label for label, _ in summary)]
        transfer = self.transfer()
        if transfer:
            heads.append("tasks better / worse")
        names = [*self.headers()]
        out = []
        for i, name in enumerate(names):
            row = [name, *(cells[i] for _, cells in summary)]
            if transfer:
                if i < len(self.columns):
                    verdicts = [r.verdict for r in transfer[self.columns[i].label]]
                    row.append(f"{verdicts.count('better')} / {verdicts.count('worse')} "
                               f"of {len(verdicts)}")  # fmt: skip
                else:
                    row.append("")
            out.append(row)
        return heads, out

    def markdown(self) -> str:
        """The table as Markdown (values: mean ± 95% CI over seeds), the summary by run
        (:meth:`by_run`, when more than one column), then negative transfer."""
        heads = self.headers()
        lines = [
            "| task / metric | " + " | ".join(heads) + " |",
            "| --- |" + " ---: |" * len(heads),
        ]
        lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in self.rows()]
        if len(self.columns) > 1:
            side_heads, side_rows = self.by_run()
            lines += [
                "",
                "Summary by run (mean ± 95% CI over seeds; tasks better / worse: the "
                "negative-transfer verdicts below):",
                "",
                "| " + " | ".join(side_heads) + " |",
                "| --- |" + " ---: |" * (len(side_heads) - 1),
            ]
            lines += ["| " + " | ".join(r) + " |" for r in side_rows]
        for label, rows in self.transfer().items():
            worse = [r.task for r in rows if r.verdict == "worse"]
            better = [r.task for r in rows if r.verdict == "better"]
            lines += [
                "",
                f"Negative transfer, {label} against the baseline: "
                f"{len(worse)} of {len(rows)} tasks worse ({', '.join(worse) or 'none'}), "
                f"{len(better)} better, the rest unclear at 95% (Welch CI over seeds; one seed "
                "on a side gives the sign only, marked ?).",
                "",
                transfer_table(rows),
            ]
        return "\n".join(lines)

    def plot(self) -> bytes:
        """PNG bytes: each task's headline metric, one bar per column (error bar: 95% CI)."""
        from manytask.train.report import _figure, figure_png

        headline = {t: self.metrics[t][0] for t in self.tasks}
        groups: dict[str, list[str]] = {}
        for t in self.tasks:
            groups.setdefault(headline[t], []).append(t)
        width = max(6.0, min(40.0, 0.35 * len(self.tasks) * max(1, len(self.columns)) + 3))
        fig = _figure(width, 3.2 * len(groups))
        axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
        n = len(self.columns) + (1 if self.baseline else 0)
        bar = 0.8 / max(1, n)
        for ax, (metric, tasks) in zip(axes, groups.items(), strict=True):
            for j, c in enumerate(self.columns):
                stats = [seed_ci95(c.values(t, metric)) if c.values(t, metric) else (math.nan, 0)
                         for t in tasks]  # fmt: skip
                xs = [i + (j - (n - 1) / 2) * bar for i in range(len(tasks))]
                ax.bar(xs, [s[0] for s in stats], bar, yerr=[s[1] for s in stats],
                       capsize=2, label=c.label)  # fmt: skip
            if self.baseline:
                vals = [self.baseline["values"][t].get(metric, math.nan) for t in tasks]
                xs = [i + (n - 1 - (n - 1) / 2) * bar for i in range(len(tasks))]
                ax.bar(xs, vals, bar, color="tab:gray", label="baseline")
            ax.set_xticks(range(len(tasks)), tasks, rotation=60 if len(tasks) > 6 else 0,
                          ha="right" if len(tasks) > 6 else "center", fontsize=7)  # fmt: skip
            arrow = "higher" if self.directions[metric] else "lower"
            ax.set_ylabel(f"test {metric} ({arrow} is better)")
            ax.grid(alpha=0.3, axis="y")
            ax.legend(loc="best", fontsize=7)
        fig.tight_layout()
        return figure_png(fig)

    def as_dict(self) -> dict[str, Any]:
        return {
            "columns": [{"label": c.label, "runs": c.runs} for c in self.columns],
            "table": {"headers": ["task / metric", *self.headers()], "rows": self.rows()},
            "by_run": dict(zip(("headers", "rows"), self.by_run(), strict=True)),
            "delta_m": {k: {"mean": m, "ci95": ci} for k, (m, ci) in self.delta.items()},
            "transfer": {
                k: [dataclasses.asdict(r) for r in rows] for k, rows in self.transfer().items()
            },
            "definition": self.definition,
            "baseline": self.baseline,
        }


def _label_columns(columns: list[Column]) -> None:
    """Columns of the same recipe name are told apart by what differs among them: the model,
    then the method, then (if still equal) the first run's folder."""
    by_name: dict[str, list[Column]] = {}
    for c in columns:
        by_name.setdefault(c.label, []).append(c)
    for name, group in by_name.items():
        if len(group) == 1:
            continue
        facts = [
            (c.results[0].get("model", "?"), (c.results[0].get("method") or {}).get("name", "?"))
            for c in group
        ]
        varying = [i for i in range(2) if len({f[i] for f in facts}) > 1]
        labels = [", ".join(str(f[i]) for i in varying) for f in facts]
        if len(set(labels)) < len(labels):  # same model and method: the folders differ
            labels = [f"{lab}, {Path(c.runs[0]).name}" if lab else Path(c.runs[0]).name
                      for lab, c in zip(labels, group, strict=True)]  # fmt: skip
        for c, lab in zip(group, labels, strict=True):
            c.label = f"{name} [{lab}]"


def compare_runs(
    runs: Sequence[str | os.PathLike[str]],
    baseline: Sequence[str | os.PathLike[str]] = (),
    definition: Definition = "libmtl",
) -> Comparison:
    """Read ``runs`` (grouped by config into columns) and the ``baseline`` runs.

    Raises:
        FileNotFoundError / ManytaskError: a run that is missing, unfinished or not multi-task.
        ConfigError: a baseline that does not cover every task of the runs.
    """
    if not runs:
        raise ManytaskError("compare: give at least one run folder")
    columns: dict[str, Column] = {}
    tasks: list[str] = []
    metrics: dict[str, list[str]] = {}
    directions: dict[str, bool] = {}
    label_set: list[str] = []
    for p in runs:
        results = read_results(p)
        key = _group_key(p, results)
        if key not in columns:
            columns[key] = Column(results["name"])
        columns[key].runs.append(str(p))
        columns[key].results.append(results)
        for task in results["tasks"]:
            if task not in tasks:
                tasks.append(task)
                order = results.get("task_metrics", results["test"]["per_task"])
                metrics[task] = list(order[task])
        for metric, info in results.get("metrics", {}).items():
            directions[metric] = bool(info["higher_is_better"])
        for metric in results["test"].get("label_set", {}):
            if metric not in label_set:
                label_set.append(metric)
    _label_columns(list(columns.values()))
    base = None
    delta: dict[str, tuple[float, float]] = {}
    if baseline:
        base = baseline_values(baseline, tasks)
        for c in columns.values():
            per_seed = [
                delta_m(r["test"]["per_task"], base["values"], directions, definition).value
                for r in c.results
            ]
            delta[c.label] = seed_ci95(per_seed)
    return Comparison(
        list(columns.values()), tasks, metrics, directions, label_set, delta, definition, base
    )


def write_comparison(comparison: Comparison, out: str | os.PathLike[str]) -> list[Path]:
    """Write ``compare.md``, ``compare.json`` and ``compare.png`` into the folder ``out``."""
    import json

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    writer = RunDir(folder)
    paths = [
        writer.write_bytes("compare.md", (comparison.markdown() + "\n").encode()),
        writer.write_bytes(
            "compare.json", (json.dumps(comparison.as_dict(), indent=2) + "\n").encode()
        ),
        writer.write_bytes("compare.png", comparison.plot()),
    ]
    return paths
