"""Give back what a run trained: :func:`load_run` and :func:`evaluate_run`."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from manytask.config import RunConfig, load_config
from manytask.meta import MetaLearner
from manytask.train.build import build_learner, load_splits, meta_test_episodes, resolve_device
from manytask.train.evaluate import Accuracy, evaluate
from manytask.train.rundir import RunDir

__all__ = ["evaluate_run", "load_run", "run_config"]


def run_config(run_dir: str | os.PathLike[str], overrides: list[str] | None = None) -> RunConfig:
    """The resolved config of a run folder (with optional ``key=value`` overrides)."""
    return load_config(RunDir(run_dir).read_config(), overrides)


def load_run(run_dir: str | os.PathLike[str], device: str | torch.device = "cpu") -> MetaLearner:
    """The trained meta-learner of a finished run, in eval mode, ready to call.

    Args:
        run_dir: a run folder written by ``manytask run`` (or :func:`manytask.train.train`).
        device: where to put the learner.

    Returns:
        The learner: ``learner(support_x, support_y, query_x) -> logits [T, N*Q, N]``.
    """
    run = RunDir(run_dir)
    cfg = load_config(run.read_config())
    learner = build_learner(cfg.model)
    weights = run.final_weights if run.final_weights.exists() else run.last_checkpoint
    if not weights.exists():
        raise FileNotFoundError(f"{Path(run_dir)} has no trained weights yet (no checkpoints)")
    state = run.load_checkpoint(weights)
    learner.load_state_dict(state["learner"])
    return learner.to(device).eval()


def evaluate_run(
    run_dir: str | os.PathLike[str],
    overrides: list[str] | None = None,
    *,
    progress: bool = True,
) -> tuple[Accuracy, RunConfig]:
    """Evaluate a run's learner on its fixed test episodes (``eval.*`` may be overridden)."""
    cfg = run_config(run_dir, overrides)
    device = resolve_device(cfg.device)
    learner = load_run(run_dir, device)
    splits = load_splits(cfg.data, progress=progress)
    episodes = meta_test_episodes(cfg, splits.test, device)
    acc = evaluate(learner, episodes, total=len(episodes), progress=progress, desc="test")
    return acc, cfg
