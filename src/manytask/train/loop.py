"""The meta-training loop shared by every meta-learner.

Sample a meta-batch of tasks, call the learner on the support sets, take cross-entropy on the
query labels, step. The loop checkpoints atomically every ``train.checkpoint_every`` episodes;
the checkpoint holds the learner, optimiser, scheduler, episode sampler and running-metric
state, so a resumed run continues with the same data order and ends bit-identical to a run
that never stopped.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from manytask.config import RunConfig, to_dict
from manytask.train.build import (
    build_learner,
    load_splits,
    make_fixed_episodes,
    meta_test_episodes,
    resolve_device,
)
from manytask.train.evaluate import Accuracy, episode_accuracy, evaluate
from manytask.train.progress import progress_bar
from manytask.train.rundir import RunDir

__all__ = ["TrainResult", "train"]

log = logging.getLogger("manytask")

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns: the run folder, the test accuracy and the results dict."""

    run: RunDir
    test: Accuracy
    results: dict[str, Any]


class _Window:
    """Running sums of loss and accuracy between two log lines (saved in checkpoints)."""

    def __init__(self) -> None:
        self.loss = 0.0
        self.acc = 0.0
        self.count = 0

    def add(self, loss: float, acc: float) -> None:
        self.loss += loss
        self.acc += acc
        self.count += 1

    def state_dict(self) -> dict[str, float | int]:
        return {"loss": self.loss, "acc": self.acc, "count": self.count}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.loss, self.acc, self.count = float(s["loss"]), float(s["acc"]), int(s["count"])


def train(
    cfg: RunConfig,
    run_dir: str | os.PathLike[str] | RunDir,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult | None:
    """Meta-train ``cfg`` in ``run_dir``, then evaluate on the fixed meta-test episodes.

    Args:
        cfg: the resolved configuration.
        run_dir: the run folder; created for a new run, read for ``resume=True``.
        resume: continue from ``checkpoints/last.pt``.
        stop_after: stop (after checkpointing) once this many episodes are done; the run
            can be resumed later. ``None`` trains to ``cfg.train.episodes``. Returns ``None``
            when it stopped early.
        should_stop: polled after every episode; when it returns True the run checkpoints
            and returns ``None`` (the command line sets it on Ctrl-C / SIGTERM).

    Returns:
        The test accuracy and results, or ``None`` if ``stop_after`` ended the run early.
    """
    from manytask.data.episodes import EpisodeSampler

    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if not resume:
        run.check_new()  # fail before loading anything
    show = not cfg.quiet
    device = resolve_device(cfg.device)
    tc, ec = cfg.train, cfg.train.episode

    splits = load_splits(cfg.data, progress=show)
    learner = build_learner(cfg.model, seed=cfg.seed).to(device)
    opt = torch.optim.Adam(learner.parameters(), lr=tc.optim.lr, weight_decay=tc.optim.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=tc.optim.step_size, gamma=tc.optim.gamma)
    sampler = EpisodeSampler(
        splits.train,
        ec.ways,
        ec.shots,
        ec.queries,
        ec.tasks,
        rotations=tuple(cfg.data.rotations),
        group_by=cfg.data.group_by,
        device=device,
        seed=cfg.seed,
    )
    val_episodes = None
    if tc.val_every > 0:
        val_episodes = make_fixed_episodes(
            splits.val,
            cfg.eval.episode,
            cfg.data,
            episodes=tc.val_episodes,
            seed=cfg.eval.seed + 1,
            batch_size=cfg.eval.batch_size,
            device=device,
        )

    step, window, elapsed = 0, _Window(), 0.0
    if not resume:
        # Written only once data and learner are built, so a bad data set or device leaves
        # no half-made run folder behind.
        run.create(to_dict(cfg))
    else:
        state = run.load_checkpoint()
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(
                f"{run.last_checkpoint}: checkpoint format {state.get('version')} "
                f"is not {CHECKPOINT_VERSION}; it was written by another version"
            )
        learner.load_state_dict(state["learner"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        window.load_state_dict(state["window"])
        step, elapsed = int(state["step"]), float(state["elapsed_s"])
        run.truncate_metrics(step)
        log.info("resumed %s at episode %d", run.path, step)

    def checkpoint() -> None:
        run.save_checkpoint(
            {
                "version": CHECKPOINT_VERSION,
                "step": step,
                "elapsed_s": elapsed,
                "learner": learner.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "sampler": sampler.state_dict(),
                "window": window.state_dict(),
            }
        )

    learner.train()
    bf16 = tc.precision == "bf16"
    end = tc.episodes if stop_after is None else min(stop_after, tc.episodes)
    t0 = time.perf_counter() - elapsed
    with progress_bar(total=tc.episodes, desc="train", enabled=show, unit="ep") as bar:
        bar.update(step)
        while step < end:
            ep = sampler.sample()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = learner(ep.support_x, ep.support_y, ep.query_x)
            loss = F.cross_entropy(logits.float().flatten(0, 1), ep.query_y.flatten())
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss is {loss.item()} at episode {step + 1}; the last good state is in "
                    f"{run.last_checkpoint}. Lower train.optim.lr and resume, or start anew."
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            window.add(loss.item(), episode_accuracy(logits.detach(), ep.query_y).mean().item())
            bar.update(1)
            elapsed = time.perf_counter() - t0
            if step % tc.log_every == 0 or step == tc.episodes:
                rec = {
                    "step": step,
                    "split": "train",
                    "loss": window.loss / window.count,
                    "acc": 100.0 * window.acc / window.count,
                    "lr": sched.get_last_lr()[0],
                    "elapsed_s": round(elapsed, 3),
                }
                run.log(rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['acc']:.1f}")
                window = _Window()
            if val_episodes is not None and step % tc.val_every == 0:
                acc = evaluate(learner, val_episodes, total=len(val_episodes), progress=False)
                run.log({"step": step, "split": "val", **acc.as_dict()})
            if step % tc.checkpoint_every == 0 or step == end:
                checkpoint()
            elif should_stop is not None and should_stop():
                checkpoint()
                break
    if step < tc.episodes:
        return None
    return finish(cfg, run, learner, splits.test, train_seconds=elapsed)


def finish(
    cfg: RunConfig, run: RunDir, learner: torch.nn.Module, test_store, *, train_seconds: float
) -> TrainResult:
    """Save the trained weights, evaluate on the fixed test episodes, write results and report."""
    from manytask.train.report import write_report

    run.save_checkpoint({"learner": learner.state_dict()}, run.final_weights)
    device = next(learner.parameters()).device
    episodes = meta_test_episodes(cfg, test_store, device)
    t0 = time.perf_counter()
    acc = evaluate(learner, episodes, total=len(episodes), progress=not cfg.quiet, desc="test")
    e = cfg.eval.episode
    results = {
        "name": cfg.name,
        "test": {
            **acc.as_dict(),
            "ways": e.ways,
            "shots": e.shots,
            "queries": e.queries,
            "seed": cfg.eval.seed,
            "split": f"{cfg.data.split}/{cfg.data.test_part}",
        },
        "train_episodes": cfg.train.episodes,
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(time.perf_counter() - t0, 1),
        "device": str(device),
        "seed": cfg.seed,
    }
    run.log({"step": cfg.train.episodes, "split": "test", **acc.as_dict()})
    run.write_json("results.json", results)
    run.write_json("test_accuracies.json", {"per_episode": list(acc.per_episode)})
    write_report(run)
    return TrainResult(run=run, test=acc, results=results)
