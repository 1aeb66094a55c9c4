"""Single-task baselines, one command away: one run per task of a multi-task recipe.

``manytask run RECIPE --single-task --out DIR`` (or :func:`train_single_tasks`) trains the
recipe's model on each task alone: ``DIR/NN-<task>/`` is an ordinary multi-task run of the
same config with ``tasks: [<task>]`` and its own name (same model, backbone, optimiser, steps,
batch size and seed; one task, so nothing is shared and ``tasks_per_step`` has nothing to
sample). When every task is done, ``DIR/results.json`` merges their test metrics (``"kind":
"single_task"``), so ``DIR`` is itself a baseline for ``eval.baseline`` and
``manytask compare --baseline DIR``.

``DIR/single_task.json`` lists the tasks and the base config; ``manytask run --resume DIR``
skips the finished tasks, resumes the interrupted one from its checkpoint and starts the rest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from manytask.config import load_config, to_dict
from manytask.config.mtl import MTLConfig
from manytask.train.context import RunContext
from manytask.train.evaluate import mean_ci95
from manytask.train.rundir import RunDir

__all__ = ["MANIFEST", "SingleTaskResult", "is_single_task_set", "train_single_tasks"]

MANIFEST = "single_task.json"


def is_single_task_set(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a set of single-task runs."""
    return (Path(path) / MANIFEST).exists()


def _folder(index: int, task: str) -> str:
    return f"{index:02d}-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", task)


class SingleTaskResult:
    """The merged results of a single-task set (``results`` as in its ``results.json``)."""

    def __init__(self, run: RunDir, results: dict[str, Any]) -> None:
        self.run = run
        self.results = results

    def summary(self) -> str:
        from manytask.train.mtl import summary_line

        return f"{self.results['name']}: {summary_line(self.results)}"


def _task_config(base: dict[str, Any], task: str) -> MTLConfig:
    data = json.loads(json.dumps(base))
    data["tasks"] = [task]
    data["name"] = f"{base.get('name', 'run')}-{task}"
    data.setdefault("train", {})["tasks_per_step"] = None
    data.setdefault("eval", {})["baseline"] = []  # a baseline run is not compared to one
    cfg: MTLConfig = load_config(data)
    return cfg


def train_single_tasks(
    cfg: MTLConfig | None,
    out: str | os.PathLike[str],
    ctx: RunContext | None = None,
    *,
    resume: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> SingleTaskResult | None:
    """Train ``cfg``'s model on each of its tasks alone, in ``out/NN-<task>/``.

    Args:
        cfg: the multi-task config (ignored with ``resume=True``: the set's own is used).
        out: the folder of the set.
        ctx: where to run (default: from the environment).
        resume: continue a set that stopped.
        should_stop: polled after every step; True checkpoints and returns None.

    Returns:
        The merged results, or None if stopped early.
    """
    from manytask.train import mtl

    folder = RunDir(out, writer=ctx.is_writer if ctx else True)
    manifest_path = folder.path / MANIFEST
    if resume:
        if not manifest_path.exists():
            raise FileNotFoundError(f"{folder.path} is not a single-task set ({MANIFEST} missing)")
        manifest = json.loads(manifest_path.read_text())
        base = manifest["config"]
        cfg = load_config(base)
        tasks = list(manifest["tasks"])
    else:
        if cfg is None:
            raise ValueError("train_single_tasks: give a config (or resume=True)")
        if manifest_path.exists() or folder.config_path.exists():
            raise FileExistsError(
                f"{folder.path} already holds a run; resume it with `manytask run --resume "
                f"{folder.path}` or choose another folder with --out"
            )
        ctx = ctx or RunContext.from_environment(cfg.device, quiet=cfg.quiet)
        tasks = list(mtl.load_data(cfg, ctx).task_names)
        base = to_dict(cfg)
        folder.path.mkdir(parents=True, exist_ok=True)
        folder.write_json(MANIFEST, {"config": base, "tasks": tasks})
    assert cfg is not None
    ctx = ctx or RunContext.from_environment(cfg.device, quiet=cfg.quiet)
    done: dict[str, dict[str, Any]] = {}
    for i, task in enumerate(tasks):
        sub = RunDir(folder.path / _folder(i, task), writer=folder.writer)
        if (sub.path / "results.json").exists():
            done[task] = sub.read_json("results.json")
            continue
        again = sub.last_checkpoint.exists()
        if sub.config_path.exists() and not again and sub.writer:
            shutil.rmtree(sub.path)  # killed before its first checkpoint: start it again
        result = mtl.train(_task_config(base, task), sub, ctx, resume=again,
                           should_stop=should_stop)  # fmt: skip
        if result is None:
            return None
        done[task] = result.results
    results = merge(cfg, tasks, done, folder)
    folder.write_bytes("config.yaml", json.dumps(base).encode())
    folder.write_json("results.json", results)
    if folder.writer:
        from manytask.train.report import write_mtl_report

        write_mtl_report(folder)
    return SingleTaskResult(folder, results)


def merge(
    cfg: MTLConfig, tasks: list[str], done: dict[str, dict[str, Any]], folder: RunDir
) -> dict[str, Any]:
    """One ``results.json`` from the per-task runs' results."""
    per_task = {t: done[t]["test"]["per_task"][t] for t in tasks}
    metrics: dict[str, Any] = {}
    for t in tasks:
        metrics.update(done[t]["metrics"])
    summary = {}
    for m, info in metrics.items():
        values = [per_task[t][m] for t in tasks if m in per_task[t]]
        mean, ci, std = mean_ci95(values)
        summary[m] = {"mean": mean, "ci95": ci, "std": std, "tasks": len(values),
                      "higher_is_better": info["higher_is_better"]}  # fmt: skip
    first = done[tasks[0]]
    out: dict[str, Any] = {
        "name": f"{cfg.name} (single-task)",
        "family": "mtl",
        "kind": "single_task",
        "dataset": first["dataset"],
        "tasks": tasks,
        "kinds": {t: done[t]["kinds"][t] for t in tasks},
        "headline": {t: done[t]["headline"][t] for t in tasks},
        "task_metrics": {t: done[t]["task_metrics"][t] for t in tasks},
        "model": first["model"],
        "backbone": first["backbone"],
        "method": first["method"],
        "test": {
            "split": "test",
            "per_task": per_task,
            "label_set": {},
            "summary": summary,
            "examples": {t: done[t]["test"]["examples"][t] for t in tasks},
        },
        "metrics": metrics,
        "parameters": {
            "shared": 0,
            "per_task": {t: done[t]["parameters"]["total"] for t in tasks},
            "total": sum(done[t]["parameters"]["total"] for t in tasks),
        },
        "train_steps": first["train_steps"],
        "train_seconds": round(sum(done[t]["train_seconds"] for t in tasks), 1),
        "device": first["device"],
        "seed": cfg.seed,
        "runs": {t: str(folder.path / _folder(i, t)) for i, t in enumerate(tasks)},
    }
    if all("val" in done[t] for t in tasks):
        out["val"] = {"per_task": {t: done[t]["val"]["per_task"][t] for t in tasks}}
    return out
