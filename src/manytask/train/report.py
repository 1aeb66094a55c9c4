"""``report.md`` and its PNG plots, drawn from a run folder's metrics and results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from manytask.train.rundir import RunDir, atomic_write

__all__ = ["write_report"]


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_curves(records: list[dict[str, Any]], out: Path) -> bool:
    plt = _pyplot()
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val"]
    if not train:
        return False
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [r["step"] for r in train]
    ax_loss.plot(steps, [r["loss"] for r in train], color="tab:blue")
    ax_loss.set_xlabel("episode")
    ax_loss.set_ylabel("train loss (query cross-entropy)")
    ax_loss.set_yscale("log")
    ax_loss.grid(alpha=0.3)
    ax_acc.plot(steps, [r["acc"] for r in train], label="train (training episodes)")
    if val:
        ax_acc.errorbar(
            [r["step"] for r in val],
            [r["acc"] for r in val],
            yerr=[r["ci95"] for r in val],
            label="validation (test-shaped episodes)",
            capsize=3,
            marker="o",
        )
    ax_acc.set_xlabel("episode")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def _plot_accuracy(
    per_episode: list[float], mean: float, ci95: float, title: str, out: Path
) -> None:
    plt = _pyplot()
    fig, (ax_bar, ax_hist) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_bar.bar([0], [mean], yerr=[ci95], capsize=8, color="tab:green", width=0.5)
    ax_bar.set_xticks([0], [title])
    ax_bar.set_ylim(max(0.0, mean - 10 * max(ci95, 0.5)), min(100.0, mean + 5 * max(ci95, 0.5)))
    ax_bar.set_ylabel("test accuracy (%) with 95% CI")
    ax_bar.text(0.05, mean, f" {mean:.2f} ± {ci95:.2f}%", ha="left", va="bottom")
    ax_hist.hist([100 * a for a in per_episode], bins=20, color="tab:gray")
    ax_hist.set_xlabel("accuracy of one test episode (%)")
    ax_hist.set_ylabel("episodes")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def write_report(run: RunDir) -> Path:
    """Write ``report.md`` (and ``learning_curves.png``, ``test_accuracy.png``) into ``run``."""
    cfg = run.read_config()
    records = list(run.metrics())
    results = run.read_json("results.json")
    test = results["test"]
    per_episode = run.read_json("test_accuracies.json")["per_episode"]
    title = f"{test['ways']}-way {test['shots']}-shot"
    lines = [
        f"# {cfg.get('name', run.path.name)}",
        "",
        cfg.get("description", "") or "",
        "",
        "## Result",
        "",
        "| protocol | test accuracy | 95% CI | test episodes | train episodes | train time |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {title}, {test['queries']} queries, {test['split']} | {test['acc']:.2f}% | "
        f"± {test['ci95']:.2f} | {test['episodes']} (seed {test['seed']}) | "
        f"{results['train_episodes']} | {results['train_seconds']:.0f} s on {results['device']} |",
        "",
    ]
    if _plot_curves(records, run.path / "learning_curves.png"):
        lines += ["## Learning curves", "", "![learning curves](learning_curves.png)", ""]
    _plot_accuracy(per_episode, test["acc"], test["ci95"], title, run.path / "test_accuracy.png")
    lines += ["## Test accuracy", "", "![test accuracy](test_accuracy.png)", ""]
    lines += [
        "## Reproduce",
        "",
        "```",
        f"manytask run {run.path / 'config.yaml'} --out NEW_RUN_DIR",
        f"manytask eval {run.path}",
        "```",
        "",
    ]
    out = run.path / "report.md"
    text = "\n".join(lines).encode()
    atomic_write(out, lambda fh: fh.write(text))
    return out
