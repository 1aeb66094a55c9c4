"""``report.md`` and its PNG plots, drawn from a run folder's metrics and results.

Plots are drawn with matplotlib's object API (``matplotlib.figure.Figure`` and the Agg
canvas), so writing a report never changes the plotting backend or any other global state of
the process (a notebook that trains a run keeps its own backend). The metric and its
direction come from ``results.json``, so a regression run plots and reports MSE and a
classification run accuracy, with no branch on the problem.
"""

from __future__ import annotations

import io
from typing import Any

from manytask.train.rundir import RunDir

__all__ = ["figure_png", "write_report"]


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """The PNG bytes of a matplotlib ``Figure`` (Agg canvas; no global state touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _plot_curves(records: list[dict[str, Any]], test: dict[str, Any]) -> bytes | None:
    metric, label = test["metric"], test.get("label") or test["metric"]
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val" and "mean" in r]
    if not train:
        return None
    fig = _figure(10, 3.6)
    ax_loss, ax_metric = fig.subplots(1, 2)
    steps = [r["step"] for r in train]
    losses = [r["loss"] for r in train]
    ax_loss.plot(steps, losses, color="tab:blue")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")
    if all(v > 0 for v in losses):
        ax_loss.set_yscale("log")
    ax_loss.grid(alpha=0.3)
    if all(metric in r for r in train):
        ax_metric.plot(steps, [r[metric] for r in train], label="train (training tasks)")
    if val:
        ax_metric.errorbar(
            [r["step"] for r in val],
            [r["mean"] for r in val],
            yerr=[r["ci95"] for r in val],
            label="validation (test-shaped tasks)",
            capsize=3,
            marker="o",
        )
    ax_metric.set_xlabel("step")
    ax_metric.set_ylabel(label)
    if test.get("higher_is_better") is False and all(r.get(metric, 1) > 0 for r in train):
        ax_metric.set_yscale("log")
    ax_metric.grid(alpha=0.3)
    ax_metric.legend(loc="best")
    fig.tight_layout()
    return figure_png(fig)


def _plot_test(per_task: list[float], test: dict[str, Any], title: str) -> bytes:
    mean, ci95 = test["mean"], test["ci95"]
    label = test.get("label") or test["metric"]
    fig = _figure(10, 3.6)
    ax_bar, ax_hist = fig.subplots(1, 2)
    ax_bar.bar([0], [mean], yerr=[ci95], capsize=8, color="tab:green", width=0.5)
    ax_bar.set_xticks([0], [title])
    pad = max(ci95, 0.5 if test.get("label", "").endswith("(%)") else abs(mean) * 0.02)
    low = mean - 10 * pad
    if test.get("label", "").endswith("(%)"):
        ax_bar.set_ylim(max(0.0, low), min(100.0, mean + 5 * pad))
    else:
        ax_bar.set_ylim(max(0.0, low), mean + 5 * pad)
    ax_bar.set_ylabel(f"test {label} with 95% CI")
    ax_bar.text(0.05, mean, f" {mean:.4g} ± {ci95:.2g}", ha="left", va="bottom")
    ax_hist.hist(per_task, bins=20, color="tab:gray")
    ax_hist.set_xlabel(f"{label} of one test task")
    ax_hist.set_ylabel("tasks")
    fig.tight_layout()
    return figure_png(fig)


def _protocol(test: dict[str, Any]) -> str:
    if test.get("ways"):
        return f"{test['ways']}-way {test['shots']}-shot"
    return f"{test['shots']}-shot"


def _breakdown_lines(test: dict[str, Any]) -> list[str]:
    """A table of the objective's extra metrics (e.g. accuracy by instance number), if any."""
    extra = test.get("breakdown") or {}
    if not extra:
        return []
    lines = [
        f"## Test {test['label']}, broken down",
        "",
        "| part | mean | 95% CI | tasks |",
        "| --- | --- | --- | --- |",
    ]

    def natural(name: str) -> tuple[str, int]:  # instance_2 before instance_10
        stem, _, num = name.rpartition("_")
        return (stem, int(num)) if num.isdigit() else (name, -1)

    for name, v in sorted(extra.items(), key=lambda kv: natural(kv[0])):
        lines.append(f"| {name} | {v['mean']:.4g} | ± {v['ci95']:.2g} | {v['tasks']} |")
    return [*lines, ""]


def write_report(run: RunDir) -> Any:
    """Write ``report.md`` (and ``learning_curves.png``, ``test_metric.png``) into ``run``."""
    cfg = run.read_config()
    records = list(run.metrics())
    results = run.read_json("results.json")
    test = results["test"]
    per_task = run.read_json("test_tasks.json")["per_task"]
    title = _protocol(test)
    direction = "higher is better" if test.get("higher_is_better", True) else "lower is better"
    lines = [
        f"# {cfg.get('name', run.path.name)}",
        "",
        cfg.get("description", "") or "",
        "",
        "## Result",
        "",
        f"| protocol | test {test['label']} ({direction}) | 95% CI | test tasks | "
        "train steps | train time |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {title}, {test['queries']} queries, {test['split']} | {test['mean']:.4g} | "
        f"± {test['ci95']:.2g} | {test['tasks']} (seed {test['seed']}) | "
        f"{results['train_steps']} | {results['train_seconds']:.0f} s on {results['device']} |",
        "",
    ]
    curves = _plot_curves(records, test)
    if curves is not None:
        run.write_bytes("learning_curves.png", curves)
        lines += ["## Learning curves", "", "![learning curves](learning_curves.png)", ""]
    run.write_bytes("test_metric.png", _plot_test(per_task, test, title))
    lines += [f"## Test {test['label']}", "", "![test metric](test_metric.png)", ""]
    lines += _breakdown_lines(test)
    lines += [
        "## Reproduce",
        "",
        "```",
        f"manytask run {run.path / 'config.yaml'} --out NEW_RUN_DIR",
        f"manytask eval {run.path}",
        "```",
        "",
    ]
    return run.write_bytes("report.md", "\n".join(lines).encode())
