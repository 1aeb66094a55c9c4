"""The meta-learning family: set up, one step, evaluation and the end of a run.

One step is the same for every meta-learner::

    batch = sampler.sample()                                   # T tasks
    pred  = learner(support_x, support_y, query_x, ways=N)     # [T, N*Q, N] or [T, Q, out]
    loss  = objective.loss(pred, query_y)                      # the problem decides
    learner.outer_backward(loss)                               # default: loss.backward()
    optimizer.step(); scheduler.step()

Everything that can be wrong with a request (unknown keys, impossible episodes for the data,
test tasks that do not fit in memory) fails in :func:`setup`, before the run folder exists.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from manytask.config import to_dict
from manytask.config.meta import MetaConfig
from manytask.objectives import Objective, get_objective
from manytask.train.build import build_learner, build_optimizer, build_scheduler
from manytask.train.context import RunContext
from manytask.train.evaluate import Score, evaluate
from manytask.train.loop import (
    Best,
    Clock,
    Schedule,
    TrainingDiverged,
    Window,
    fit,
    restore_state,
)
from manytask.train.rundir import RunDir
from manytask.typed import ConfigError, ManytaskError

__all__ = ["MetaSetup", "TrainResult", "evaluate_run", "load_model", "setup", "train"]

log = logging.getLogger("manytask")


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns: the run folder, the test score and the results dict."""

    run: RunDir
    test: Score
    results: dict[str, Any]

    def summary(self) -> str:
        """One line for the command line."""
        t = self.results["test"]
        shape = f"{t['ways']}-way {t['shots']}-shot" if t.get("ways") else f"{t['shots']}-shot"
        return f"{self.results['name']}: {shape} test {self.test}"


@dataclass
class MetaSetup:
    """Everything a meta-learning run holds while it trains."""

    cfg: MetaConfig
    ctx: RunContext
    source: Any
    objective: Objective
    learner: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sampler: Any
    val: Any
    test: Any

    def parts(self) -> dict[str, Any]:
        """The stateful parts a checkpoint holds (one line per part)."""
        parts: dict[str, Any] = {
            "learner": self.learner,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "sampler": self.sampler,
            "window": Window(),
            "clock": Clock(),
        }
        if self.cfg.train.keep == "best":
            parts["best"] = Best(self.objective.better)
        return parts


def _source(cfg: MetaConfig, ctx: RunContext) -> Any:
    from manytask.registry import TASKS

    args = {k: v for k, v in cfg.data.items() if k != "dataset"}
    injected = {"data_dir": ctx.data_dir, "cache_dir": ctx.cache_dir, "progress": ctx.progress}
    for key, value in injected.items():
        if TASKS.takes(cfg.data["dataset"], key):
            args[key] = value
    return TASKS.get(cfg.data["dataset"])(**args)


def _episodes(where: str, build: Callable[[], Any]) -> Any:
    """Build a sampler or fixed tasks; an impossible request becomes a config error."""
    try:
        return build()
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def test_tasks(cfg: MetaConfig, source: Any, device: torch.device) -> Any:
    """The run's fixed meta-test tasks (the same on every run, machine and batch size)."""
    e = cfg.eval.episode
    return _episodes(
        "eval.episode",
        lambda: source.fixed(
            "test", e.ways, e.shots, e.queries, cfg.eval.episodes, seed=cfg.eval.seed,
            batch_size=cfg.eval_batch_size(), device=device,
        ),
    )  # fmt: skip


def build_run_learner(cfg: MetaConfig, source: Any) -> Any:
    """The run's learner, initialised from ``cfg.seed``."""
    m = cfg.model
    return build_learner(
        m.learner, m.args, m.encoder, m.encoder_args, in_shape=source.in_shape,
        ways=cfg.train.episode.ways, out_features=source.out_features, seed=cfg.seed,
    )  # fmt: skip


def setup(cfg: MetaConfig, ctx: RunContext) -> MetaSetup:
    """Build data, learner, optimiser, sampler and the evaluation tasks of a run.

    The test tasks are built here, before any training, so a bad evaluation request fails
    now and not after hours of training.
    """
    device = ctx.device
    source = _source(cfg, ctx)
    objective = get_objective(cfg.objective)
    tr, ev = cfg.train.episode, cfg.eval.episode
    sampler = _episodes(
        "train.episode",
        lambda: source.sampler(
            "train", tr.ways, tr.shots, tr.queries, tr.tasks, seed=cfg.seed, device=device
        ),
    )
    val = None
    if cfg.train.val_every > 0:
        val = _episodes(
            "eval.episode (validation)",
            lambda: source.fixed(
                "val", ev.ways, ev.shots, ev.queries, cfg.train.val_episodes,
                seed=cfg.eval.seed + 1, batch_size=cfg.eval_batch_size(), device=device,
            ),
        )  # fmt: skip
    test = test_tasks(cfg, source, device)
    learner = build_run_learner(cfg, source).to(device)
    caution = learner.precision_caution(cfg.train.precision)
    if caution:
        log.warning("train.precision=%s: %s", cfg.train.precision, caution)
    caution = learner.resource_caution(device.type, torch.get_num_threads())
    if caution:
        log.warning("model.args: %s", caution)
    optimizer = build_optimizer(learner.parameters(), cfg.train.optim)
    scheduler = build_scheduler(optimizer, cfg.train.optim, cfg.train.episodes)
    return MetaSetup(cfg, ctx, source, objective, learner, optimizer, scheduler, sampler, val, test)


def make_step(s: MetaSetup, run: RunDir, clock: Clock) -> Callable[[], Mapping[str, Tensor]]:
    """One meta-update: sample, predict, loss, the learner's outer backward, optimiser step."""
    bf16 = s.cfg.train.precision == "bf16"
    clip = s.cfg.train.optim.grad_clip
    device_type = s.ctx.device.type

    def step() -> Mapping[str, Tensor]:
        batch = s.sampler.sample()
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            pred = s.learner(batch.support_x, batch.support_y, batch.query_x, ways=batch.ways)
        loss = s.objective.loss(pred, batch.query_y)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the training loss is {loss.item()} at step {clock.step + 1}; the last good "
                f"state is in {run.last_checkpoint}. Lower train.optim.lr (or set "
                "train.optim.grad_clip) and resume, or start anew."
            )
        s.optimizer.zero_grad(set_to_none=True)
        s.learner.outer_backward(loss)
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(s.learner.parameters(), clip)
        s.optimizer.step()
        s.scheduler.step()
        metric = s.objective.per_task(pred.detach(), batch.query_y).mean()
        return {"loss": loss.detach(), s.objective.metric: metric}

    return step


def train(
    cfg: MetaConfig,
    run_dir: str | os.PathLike[str] | RunDir,
    ctx: RunContext | None = None,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult | None:
    """Meta-train ``cfg`` in ``run_dir``, then evaluate on the fixed meta-test tasks.

    Args:
        cfg: the checked config (:func:`manytask.config.load_config`).
        run_dir: the run folder; created for a new run, read for ``resume=True``.
        ctx: where to run; default :meth:`RunContext.from_environment` of ``cfg``.
        resume: continue from ``checkpoints/last.pt``.
        stop_after: stop (after checkpointing) once this many steps are done; returns None.
        should_stop: polled after every step; True checkpoints and returns None.

    Returns:
        The test score and results, or ``None`` if the run stopped early.
    """
    ctx = ctx or RunContext.from_environment(cfg.device, quiet=cfg.quiet)
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir, writer=ctx.is_writer)
    if not resume:
        run.check_new()  # fail before loading anything
    s = setup(cfg, ctx)
    parts = s.parts()
    if resume:
        run.clean_temp()
        restore_state(run, parts)
        run.truncate_metrics(parts["clock"].step)
        log.info("resumed %s at step %d", run.path, parts["clock"].step)
    else:
        run.create(to_dict(cfg))  # only now: a failed set-up leaves no folder behind
    tb = _tensorboard(cfg, run)
    try:
        return _train(s, run, parts, stop_after=stop_after, should_stop=should_stop)
    finally:
        if tb is not None:
            run.sinks.remove(tb)
            tb.close()


def _train(
    s: MetaSetup,
    run: RunDir,
    parts: dict[str, Any],
    *,
    stop_after: int | None,
    should_stop: Callable[[], bool] | None,
) -> TrainResult | None:
    cfg = s.cfg
    best: Best | None = parts.get("best")
    kept_state: dict[str, Tensor] = {}  # the best weights of this process, on the CPU

    def save_best() -> None:
        kept_state.clear()
        kept_state.update(
            {k: v.detach().to("cpu", copy=True) for k, v in s.learner.state_dict().items()}
        )
        run.save_checkpoint({"learner": kept_state}, run.best_weights)

    def validate() -> dict[str, Any]:
        record = evaluate(s.learner, s.val, s.objective, progress=False).as_dict()
        if best is not None and best.offer(parts["clock"].step, record["mean"], save_best):
            record["best"] = True
        return record

    s.learner.train()
    done = fit(
        run,
        parts,
        make_step(s, run, parts["clock"]),
        Schedule(cfg.train.episodes, cfg.train.log_every, cfg.train.checkpoint_every,
                 cfg.train.val_every if s.val is not None else 0,
                 val_at_end=best is not None),
        validate=validate,
        lr=lambda: float(s.scheduler.get_last_lr()[0]),
        stop_after=stop_after,
        should_stop=should_stop,
        progress=s.ctx.progress,
        seed=cfg.seed,
        device=s.ctx.device,
    )  # fmt: skip
    if not done:
        return None
    kept = None
    if best is not None:
        kept = keep_best(s.learner, run, best, kept_state or None)
    return finish(s, run, train_seconds=parts["clock"].elapsed, kept=kept)


def keep_best(
    learner: Any, run: RunDir, best: Best, state: Mapping[str, Tensor] | None = None
) -> dict[str, Any]:
    """Load the best validation's weights into ``learner``; returns what ``results.json`` says.

    ``state`` is the copy this process kept when the best validation happened; a resumed run
    (whose best may predate the resume) reads ``checkpoints/best.pt`` instead.

    Raises:
        ManytaskError: no validation gave a finite metric, or ``best.pt`` is missing.
    """
    if best.step is None:
        raise ManytaskError(
            f"{run.path}: train.keep=best, but no validation gave a finite metric, so there "
            f"are no best weights; the last weights are in {run.last_checkpoint}"
        )
    if state is None:
        if not run.best_weights.exists():
            raise ManytaskError(
                f"{run.best_weights} is missing: the best validation (step {best.step}) was "
                "recorded but its weights are gone; evaluate the last weights with "
                "`manytask eval` or train again"
            )
        state = run.load_checkpoint(run.best_weights)["learner"]
    learner.load_state_dict(state)
    return {"weights": "best", "step": best.step, "val": best.value}


def _tensorboard(cfg: MetaConfig, run: RunDir) -> Any:
    """A TensorBoard sink on the run's metrics when ``train.tensorboard`` is on."""
    if not cfg.train.tensorboard or not run.writer:
        return None
    from manytask.train.tensorboard import TensorBoardSink

    sink = TensorBoardSink(run.path / "tensorboard")
    run.sinks.append(sink)
    return sink


def finish(
    s: MetaSetup, run: RunDir, *, train_seconds: float, kept: dict[str, Any] | None = None
) -> TrainResult:
    """Save the trained weights, evaluate on the test tasks, write results and the report.

    ``kept`` (from :func:`keep_best`) says the weights are those of the best validation, not
    the last step; it goes into ``results.json`` as ``"kept"``.
    """
    from manytask.train.report import write_report

    cfg = s.cfg
    run.save_checkpoint({"learner": s.learner.state_dict()}, run.final_weights)
    t0 = time.perf_counter()
    score = evaluate(s.learner, s.test, s.objective, progress=s.ctx.progress, desc="test")
    e = cfg.eval.episode
    results = {
        "name": cfg.name,
        "family": cfg.family,
        "learner": cfg.model.learner,
        "objective": cfg.objective,
        "test": {
            **score.as_dict(),
            "ways": e.ways,
            "shots": e.shots,
            "queries": e.queries,
            "seed": cfg.eval.seed,
            "split": s.source.describe("test"),
        },
        "train_steps": cfg.train.episodes,
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(time.perf_counter() - t0, 1),
        "device": str(s.ctx.device),
        "seed": cfg.seed,
        "kept": kept or {"weights": "last", "step": cfg.train.episodes},
    }
    run.log({"step": cfg.train.episodes, "split": "test", **score.as_dict()})
    run.write_json("results.json", results)
    run.write_json("test_tasks.json", {"metric": score.metric, "per_task": list(score.per_task)})
    if run.writer:  # the report is drawn from the files just written
        write_report(run)
    return TrainResult(run=run, test=score, results=results)


def load_model(cfg: MetaConfig, state: Mapping[str, Any]) -> Any:
    """The learner of ``cfg`` with the weights ``state`` (a learner ``state_dict``)."""
    learner = build_run_learner(cfg, cfg.source())
    learner.load_state_dict(state)
    return learner


def evaluate_run(cfg: MetaConfig, learner: Any, ctx: RunContext) -> tuple[Score, dict[str, Any]]:
    """Score a trained learner on ``cfg``'s test tasks; returns the score and a summary."""
    source = _source(cfg, ctx)
    score = evaluate(
        learner, test_tasks(cfg, source, ctx.device), get_objective(cfg.objective),
        progress=ctx.progress, desc="test",
    )  # fmt: skip
    e = cfg.eval.episode
    summary = {
        **score.as_dict(), "ways": e.ways, "shots": e.shots, "queries": e.queries,
        "seed": cfg.eval.seed, "split": source.describe("test"),
    }  # fmt: skip
    return score, summary
