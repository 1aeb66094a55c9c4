"""``report.md`` and its PNG plots, drawn from a run folder's metrics and results.

Plots are drawn with matplotlib's object API (``matplotlib.figure.Figure`` and the Agg
canvas), so writing a report never changes the plotting backend or any other global state of
the process (a notebook that trains a run keeps its own backend). The metric and its
direction come from ``results.json``, so a regression run plots and reports MSE and a
classification run accuracy, with no branch on the problem.
"""

from __future__ import annotations

import io
import math
from typing import Any

from manytask.train.rundir import RunDir

__all__ = ["figure_png", "write_mtl_report", "write_report"]


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
    if math.isfinite(mean) and math.isfinite(ci95):  # a diverged evaluation still gets a report
        pad = max(ci95, 0.5 if test.get("label", "").endswith("(%)") else abs(mean) * 0.02)
        low = mean - 10 * pad
        if test.get("label", "").endswith("(%)"):
            ax_bar.set_ylim(max(0.0, low), min(100.0, mean + 5 * pad))
        else:
            ax_bar.set_ylim(max(0.0, low), mean + 5 * pad)
        ax_bar.text(0.05, mean, f" {mean:.4g} ± {ci95:.2g}", ha="left", va="bottom")
    ax_bar.set_ylabel(f"test {label} with 95% CI")
    finite = [v for v in per_task if math.isfinite(v)]
    if finite:
        ax_hist.hist(finite, bins=20, color="tab:gray")
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
    kept = results.get("kept", {})
    if kept.get("weights") == "best":
        lines += [
            f"Tested with the weights of the best validation (`train.keep: best`): step "
            f"{kept['step']} of {results['train_steps']}, validation {test['label']} "
            f"{kept['val']:.4g}.",
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


# --- multi-task runs ----------------------------------------------------------------------------


def _fmt(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def _plot_task_curves(records: list[dict[str, Any]], results: dict[str, Any]) -> bytes | None:
    """Per-task learning curves: training loss per task, validation headline metric per task."""
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    if not train:
        return None
    tasks = results["tasks"]
    many = len(tasks) > 10
    fig = _figure(11, 4.0)
    ax_loss, ax_val = fig.subplots(1, 2)
    for t in tasks:
        pts = [(r["step"], r[f"loss/{t}"]) for r in train if f"loss/{t}" in r]
        if pts:
            ax_loss.plot(*zip(*pts, strict=True), lw=0.7 if many else 1.2,
                         alpha=0.5 if many else 1.0, label=None if many else t)  # fmt: skip
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss of each task")
    if all(r.get(f"loss/{t}", 1) > 0 for r in train for t in tasks):
        ax_loss.set_yscale("log")
    ax_loss.grid(alpha=0.3)
    if val:
        for t in tasks:
            metric = results["headline"][t]
            pts = [(r["step"], r[f"{t}/{metric}"]) for r in val if f"{t}/{metric}" in r]
            if pts:
                ax_val.plot(*zip(*pts, strict=True), marker="" if many else "o",
                            lw=0.7 if many else 1.2, alpha=0.5 if many else 1.0,
                            label=None if many else f"{t} ({metric})")  # fmt: skip
        metrics = sorted({results["headline"][t] for t in tasks})
        if len(metrics) == 1 and any(f"mean/{metrics[0]}" in r for r in val):
            pts = [(r["step"], r[f"mean/{metrics[0]}"]) for r in val if f"mean/{metrics[0]}" in r]
            ax_val.plot(*zip(*pts, strict=True), color="black", lw=2.5, label="mean over tasks")
        ax_val.set_ylabel("validation " + " / ".join(metrics))
    else:
        ax_val.text(0.5, 0.5, "no validation during training\n(train.val_every=0)",
                    ha="center", va="center", transform=ax_val.transAxes)  # fmt: skip
    ax_val.set_xlabel("step")
    ax_val.grid(alpha=0.3)
    for ax in (ax_loss, ax_val):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    return figure_png(fig)


def _plot_task_bars(results: dict[str, Any]) -> bytes:
    """Each task's test headline metric (grouped by metric), with the mean over tasks."""
    tasks = results["tasks"]
    per_task = results["test"]["per_task"]
    groups: dict[str, list[str]] = {}
    for t in tasks:
        groups.setdefault(results["headline"][t], []).append(t)
    width = max(6.0, min(40.0, 0.25 * len(tasks) + 3))
    fig = _figure(width, 3.2 * len(groups))
    axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
    for ax, (metric, names) in zip(axes, groups.items(), strict=True):
        vals = [per_task[t].get(metric, math.nan) for t in names]
        ax.bar(range(len(names)), vals, color="tab:green")
        s = results["test"]["summary"].get(metric)
        if s:
            ax.axhline(s["mean"], color="black", lw=1, ls="--", label=f"mean {s['mean']:.4g}")
            ax.legend(loc="best", fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=60 if len(names) > 6 else 0,
                      ha="right" if len(names) > 6 else "center", fontsize=7)  # fmt: skip
        hib = results["metrics"][metric]["higher_is_better"]
        ax.set_ylabel(f"test {metric} ({'higher' if hib else 'lower'} is better)")
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return figure_png(fig)


def _gradient_conflict_section(
    run: RunDir, records: list[dict[str, Any]], results: dict[str, Any]
) -> list[str]:
    """Heatmap of the mean pairwise cosine of the task gradients, and its curve over training
    (gradient methods record both; see manytask.mtl.diagnostics.conflict)."""
    conflict = results.get("gradient_conflict")
    if not conflict:
        return []
    import torch

    from manytask.mtl.diagnostics import conflict_curve, conflict_heatmap, png

    cos = torch.tensor(
        [[math.nan if v is None else v for v in row] for row in conflict["mean_cosine"]]
    )
    run.write_bytes("gradient_conflict.png", png(conflict_heatmap(cos, conflict["tasks"])))
    k = cos.shape[0]
    off = [float(cos[i, j]) for i in range(k) for j in range(k) if i != j]
    off = [v for v in off if v == v]
    lines = [
        "## Gradient conflict",
        "",
        "Mean cosine similarity of the task gradients on the shared parameters over training "
        "(negative: the tasks pull the shared parameters apart).",
    ]
    if off:
        worst = min(
            ((i, j) for i in range(k) for j in range(i + 1, k) if cos[i, j] == cos[i, j]),
            key=lambda ij: float(cos[ij[0], ij[1]]),
            default=None,
        )
        lines.append(
            f"Mean over pairs {sum(off) / len(off):+.3f}; {sum(v < 0 for v in off) // 2} of "
            f"{len(off) // 2} pairs trained together conflict on average"
            + (
                f"; most conflicting: {conflict['tasks'][worst[0]]} / "
                f"{conflict['tasks'][worst[1]]} ({float(cos[worst[0], worst[1]]):+.3f})."
                if worst
                else "."
            )
        )
    lines += ["", "![gradient conflict heatmap](gradient_conflict.png)", ""]
    train = [r for r in records if r.get("split") == "train" and "grad_cosine" in r]
    if train:
        fig = conflict_curve(
            [int(r["step"]) for r in train],
            [float(r["grad_cosine"]) for r in train],
            [float(r.get("grad_conflict", math.nan)) for r in train],
        )
        run.write_bytes("gradient_conflict_curve.png", png(fig))
        lines += ["![gradient conflict over training](gradient_conflict_curve.png)", ""]
    return lines


def _task_affinity_section(run: RunDir, results: dict[str, Any]) -> list[str]:
    """Heatmap of the mean TAG lookahead affinity and the suggested grouping, when the run
    measured it (``diagnostics.affinity_every``; see manytask.mtl.diagnostics.affinity)."""
    aff = results.get("task_affinity")
    if not aff:
        return []
    import torch

    from manytask.mtl.diagnostics import affinity_heatmap, png

    names = aff["tasks"]
    z = torch.tensor([[math.nan if v is None else v for v in row] for row in aff["mean_affinity"]])
    run.write_bytes("task_affinity.png", png(affinity_heatmap(z, names)))
    g = aff["grouping"]
    k = len(names)
    pairs = [(float(z[i, j]), names[i], names[j]) for i in range(k) for j in range(k)
             if i != j and z[i, j] == z[i, j]]  # fmt: skip
    limit = aff["max_groups"]
    lines = [
        "## Task affinity",
        "",
        f"TAG lookahead affinity (Fifty et al. 2021), measured on {aff['steps_measured']} "
        f"steps (every {aff['every']}, lookahead step {aff['lr']:g}): `Z[i -> j] = 1 - "
        "L_j(theta - lr grad L_i) / L_j(theta)` on the step's batch, positive when a step on "
        "task i's gradient lowers task j's loss.",
    ]
    if pairs:
        helps, hurts = max(pairs), min(pairs)
        neg = sum(v < 0 for v, _, _ in pairs)
        lines.append(
            f"{neg} of {len(pairs)} ordered pairs measured hurt on average; most helpful: "
            f"{helps[1]} -> {helps[2]} ({helps[0]:+.3g}); most harmful: {hurts[1]} -> "
            f"{hurts[2]} ({hurts[0]:+.3g})."
        )
    groups = "; ".join("{" + ", ".join(grp) + "}" for grp in g["groups"])
    lines += [
        "",
        f"**Suggested grouping** ({len(g['groups'])} network(s)"
        + (f", at most {limit}" if limit else "")
        + f"): {groups}. Predicted score (sum over tasks of the mean affinity onto each task "
        f"from its group) {g['predicted_score']:+.4g}, against {g['all_together_score']:+.4g} "
        f"for all tasks in one network and {g['each_alone_score']:+.4g} for each task alone. "
        "The measured result of a grouping needs its networks trained: one run per group "
        "(`tasks=[...]`), compared with `manytask compare`.",
        "",
        "![task affinity heatmap](task_affinity.png)",
        "",
    ]
    return lines


def write_mtl_report(run: RunDir) -> Any:
    """Write a multi-task run's ``report.md`` with ``task_curves.png`` and ``task_metrics.png``."""
    cfg = run.read_config()
    records = list(run.metrics())
    results = run.read_json("results.json")
    test = results["test"]
    val = results.get("val")
    tasks = results["tasks"]
    metrics: list[str] = []
    for t in tasks:
        metrics += [m for m in results["task_metrics"][t] if m not in metrics]
    arrows = {m: "↑" if results["metrics"][m]["higher_is_better"] else "↓" for m in metrics}
    p = results["parameters"]
    lines = [
        f"# {cfg.get('name', run.path.name)}",
        "",
        cfg.get("description", "") or "",
        "",
        f"Data `{results['dataset']}`, {len(tasks)} task(s); model `{results['model']}` over "
        f"`{results['backbone']}`; method `{results['method']['repr']}`; "
        f"{results['train_steps']} steps in {results['train_seconds']:.0f} s on "
        f"{results['device']}; seed {results['seed']}. Parameters: {p['shared']:,} shared, "
        f"{p['total'] - p['shared']:,} task-specific, {p['total']:,} in all.",
        "",
        "## Mean over tasks (test)",
        "",
        "| metric | mean | 95% CI over tasks | tasks |",
        "| --- | ---: | ---: | ---: |",
    ]
    for m, s in test["summary"].items():
        lines.append(f"| {m} {arrows[m]} | {s['mean']:.4g} | ± {s['ci95']:.2g} | {s['tasks']} |")
    for m, v in test.get("label_set", {}).items():
        lines.append(f"| {m} (over the label set) | {v:.4g} | | {len(tasks)} |")
    if "delta_m" in results:
        d = results["delta_m"]
        better = "higher" if d["higher_is_better"] else "lower"
        sources = sorted({s for v in d["baseline"].values() for s in v})
        lines += [
            "",
            f"**Delta_m = {d['value']:+.2f}%** ({d['definition']}, {better} is better) against "
            f"the baseline runs {', '.join(sources)}.",
        ]
    head = "| task | " + " | ".join(f"test {m} {arrows[m]}" for m in metrics)
    if val:
        head += " | " + " | ".join(f"val {m}" for m in metrics)
    head += " | examples (test) | parameters (task) |"
    if "delta_m" in results:
        head += " Delta_m % |"
    ncols = head.count("|") - 1
    lines += ["", "## Per task", "", head, "|" + " --- |" * ncols]
    for t in tasks:
        row = f"| {t} | " + " | ".join(_fmt(test["per_task"].get(t, {}).get(m)) for m in metrics)
        if val:
            row += " | " + " | ".join(_fmt(val["per_task"].get(t, {}).get(m)) for m in metrics)
        row += f" | {test['examples'].get(t, 0)} | {p['per_task'][t]:,} |"
        if "delta_m" in results:
            row += f" {results['delta_m']['per_task'].get(t, math.nan):+.2f} |"
        lines.append(row)
    lines.append("")
    curves = _plot_task_curves(records, results)
    if curves is not None:
        run.write_bytes("task_curves.png", curves)
        lines += ["## Learning curves", "", "![per-task learning curves](task_curves.png)", ""]
    run.write_bytes("task_metrics.png", _plot_task_bars(results))
    lines += ["## Test metric of each task", "", "![per-task test metrics](task_metrics.png)", ""]
    lines += _gradient_conflict_section(run, records, results)
    lines += _task_affinity_section(run, results)
    lines += [
        "## Reproduce",
        "",
        "```",
        f"manytask run {run.path / 'config.yaml'} --out NEW_RUN_DIR",
        f"manytask compare {run.path} NEW_RUN_DIR",
        "```",
        "",
    ]
    return run.write_bytes("report.md", "\n".join(lines).encode())
