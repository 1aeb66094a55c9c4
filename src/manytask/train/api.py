"""Give back what a run trained: :func:`load_run`, :func:`evaluate_run`, :func:`run_config`.

These work for every family and for runs written by older versions of manytask: a run's
``config.yaml`` carries its schema version and is migrated when read (see
:func:`manytask.config.migrate`).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import torch

from manytask.config import load_config
from manytask.train.context import RunContext
from manytask.train.evaluate import Score
from manytask.train.rundir import RunDir

__all__ = ["evaluate_run", "load_run", "run_config", "train", "trainer_of"]


def run_config(run_dir: str | os.PathLike[str], overrides: list[str] | None = None) -> Any:
    """The resolved config of a run folder (with optional ``key=value`` overrides)."""
    return load_config(RunDir(run_dir, writer=False).read_config(), overrides)


def trainer_of(cfg: Any) -> Any:
    """The module that trains ``cfg``'s family (its ``train``, ``load_model``, ...)."""
    return importlib.import_module(type(cfg).trainer)


def train(
    cfg: Any,
    run_dir: str | os.PathLike[str] | RunDir,
    ctx: RunContext | None = None,
    **kwargs: Any,
) -> Any:
    """Train ``cfg`` (any family) in ``run_dir``; see the family's ``train`` for ``kwargs``.

    ``ctx`` defaults to :meth:`RunContext.from_environment` of the config's device.
    """
    return trainer_of(cfg).train(cfg, run_dir, ctx, **kwargs)


def _learner_state(run: RunDir) -> dict[str, Any]:
    weights = run.final_weights if run.final_weights.exists() else run.last_checkpoint
    if not weights.exists():
        raise FileNotFoundError(f"{run.path} has no trained weights yet (no checkpoints)")
    state = run.load_checkpoint(weights)
    parts: dict[str, Any] = state.get("parts", state)
    # A meta-learning run saves its learner; a multi-task run its model and task specs.
    return parts.get("learner", parts)


def load_run(
    run_dir: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    overrides: list[str] | None = None,
) -> Any:
    """The trained learner (or model) of a run, in eval mode, ready to call.

    Args:
        run_dir: a run folder written by ``manytask run`` (or a family's ``train``).
        device: where to put it.
        overrides: ``key=value`` changes to the run's config that do not change the model
            (e.g. ``data.source=archives``).

    Returns:
        For a meta-learning run, the learner:
        ``learner(support_x, support_y, query_x, ways=N) -> predictions``. The final weights
        when the run finished, else those of the last checkpoint.
    """
    run = RunDir(run_dir, writer=False)
    cfg = run_config(run_dir, overrides)
    model = trainer_of(cfg).load_model(cfg, _learner_state(run))
    return model.to(device).eval()


def evaluate_run(
    run_dir: str | os.PathLike[str],
    overrides: list[str] | None = None,
    ctx: RunContext | None = None,
) -> tuple[Score, dict[str, Any], Any]:
    """Evaluate a run's trained model on its fixed test tasks (``eval.*`` may be overridden).

    Returns:
        The score, a summary dict (as in ``results.json``'s ``test``) and the config used.
    """
    cfg = run_config(run_dir, overrides)
    ctx = ctx or RunContext.from_environment(cfg.device, quiet=cfg.quiet)
    model = load_run(run_dir, ctx.device, overrides)
    score, summary = trainer_of(cfg).evaluate_run(cfg, model, ctx)
    return score, summary, cfg
