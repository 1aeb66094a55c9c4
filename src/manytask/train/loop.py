"""The training loop every family shares, and the checkpoint of its stateful parts.

A family (meta-learning, multi-task learning) builds its parts and hands :func:`fit` one
function that does one training step. :func:`fit` does the rest, the same way for every
family: progress, a metrics line every ``log_every`` steps, validation every ``val_every``,
an atomic checkpoint every ``checkpoint_every`` (and when stopped), and a clean stop on
request.

What a checkpoint holds comes from one dictionary of named stateful parts (anything with
``state_dict()`` / ``load_state_dict()``: the learner, optimiser, scheduler, sampler, running
metrics, the step clock, and later loss-weighting state). Adding a stateful part is one entry;
:func:`save_state` and :func:`restore_state` save and restore all of them, so a resumed run
continues with the same data order and ends bit-identical to one that never stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from manytask.nn.init import derived_seed, global_rng_untouched
from manytask.progress import progress_bar
from manytask.train.rundir import RunDir
from manytask.typed import ManytaskError

__all__ = [
    "CHECKPOINT_VERSION",
    "Best",
    "Clock",
    "Schedule",
    "Stateful",
    "TrainingDiverged",
    "Window",
    "fit",
    "restore_state",
    "save_state",
]

CHECKPOINT_VERSION = 2
"""The layout of ``checkpoints/last.pt``: ``{"version": 2, "parts": {name: state}}``."""


class TrainingDiverged(ManytaskError, FloatingPointError):
    """The training loss is not finite; the last good state is in the last checkpoint."""


class Stateful(Protocol):
    def state_dict(self) -> Mapping[str, Any]: ...
    def load_state_dict(self, state: Mapping[str, Any], /) -> Any: ...


class Clock:
    """The step count and the training seconds so far (a stateful part)."""

    def __init__(self) -> None:
        self.step = 0
        self.elapsed = 0.0

    def state_dict(self) -> dict[str, float | int]:
        return {"step": self.step, "elapsed_s": self.elapsed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step, self.elapsed = int(state["step"]), float(state["elapsed_s"])


class Best:
    """The best validation so far, for ``train.keep: best`` (a stateful part).

    :meth:`offer` compares a validation metric with the best one so far through ``better``
    (the objective's :meth:`~manytask.objectives.Objective.better`: strictly better in the
    metric's direction) and, when it is, records it and calls ``save`` (which writes the
    weights to keep). Its state (step and value of the best validation) goes into every
    checkpoint, so a resumed run keeps comparing with the same best. A NaN metric is never
    better.
    """

    def __init__(self, better: Callable[[float, float], bool]) -> None:
        self.better = better
        self.step: int | None = None
        self.value: float | None = None

    def offer(self, step: int, value: float, save: Callable[[], None]) -> bool:
        """Keep ``value`` (and call ``save``) if it beats the best so far; True if it did."""
        if value != value:  # NaN
            return False
        if self.value is not None and not self.better(value, self.value):
            return False
        save()
        self.step, self.value = step, float(value)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "value": self.value}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step = None if state["step"] is None else int(state["step"])
        self.value = None if state["value"] is None else float(state["value"])


class Window:
    """Running sums of named scalars between two log lines (a stateful part).

    Values are added as tensors and summed on their device, so logging forces no device sync
    until a line is written. Each name is averaged over the steps that reported it (a
    multi-task step that samples tasks reports a task's loss only when the task was drawn).
    """

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}
        self.count = 0

    def add(self, values: Mapping[str, Tensor]) -> None:
        for k, v in values.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + 1
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: float(v) / max(1, self.counts.get(k, self.count)) for k, v in self.sums.items()}

    def reset(self) -> None:
        self.sums, self.counts, self.count = {}, {}, 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "sums": {k: v.cpu() for k, v in self.sums.items()},
            "counts": dict(self.counts),
            "count": self.count,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sums = {k: torch.as_tensor(v) for k, v in state["sums"].items()}
        self.count = int(state["count"])
        # Checkpoints from before per-name counts: every name was reported at every step.
        self.counts = {k: int(state.get("counts", {}).get(k, self.count)) for k in self.sums}


def save_state(run: RunDir, parts: Mapping[str, Stateful]) -> None:
    """Checkpoint every part atomically to ``checkpoints/last.pt``."""
    run.save_checkpoint(
        {"version": CHECKPOINT_VERSION, "parts": {k: p.state_dict() for k, p in parts.items()}}
    )


def restore_state(run: RunDir, parts: Mapping[str, Stateful]) -> None:
    """Load ``checkpoints/last.pt`` into every part.

    Raises:
        ManytaskError: the checkpoint comes from another version of manytask, or lacks a part
            (the message says which and what to do).
    """
    state = run.load_checkpoint()
    version = state.get("version")
    if version != CHECKPOINT_VERSION:
        raise ManytaskError(
            f"{run.last_checkpoint}: this checkpoint has format {version}, written by "
            f"another version of manytask (this one resumes format {CHECKPOINT_VERSION}). "
            f"Its trained learner still loads (manytask.load_run, manytask eval); to train "
            "further, start a new run."
        )
    saved = state["parts"]
    missing = [k for k in parts if k not in saved]
    if missing:
        raise ManytaskError(
            f"{run.last_checkpoint}: the checkpoint has no state for {', '.join(missing)}; it "
            "was written by a run with other parts. Start a new run."
        )
    for name, part in parts.items():
        part.load_state_dict(saved[name])


@dataclass(frozen=True)
class Schedule:
    """When the loop logs, validates and checkpoints (every N steps; 0 = never validate).

    ``val_at_end`` also validates after the last step when it is not a multiple of
    ``val_every`` (``train.keep: best`` needs the last weights compared too).
    """

    total: int
    log_every: int
    checkpoint_every: int
    val_every: int = 0
    val_at_end: bool = False


def fit(
    run: RunDir,
    parts: Mapping[str, Stateful],
    step: Callable[[], Mapping[str, Tensor]],
    schedule: Schedule,
    *,
    validate: Callable[[], Mapping[str, Any]] | None = None,
    lr: Callable[[], float] = lambda: float("nan"),
    stop_after: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = True,
    seed: int | None = None,
    device: torch.device | None = None,
) -> bool:
    """Run ``step`` until ``schedule.total`` steps are done (or a stop); True when finished.

    Args:
        run: the run folder (metrics and checkpoints go there).
        parts: the stateful parts; must hold a :class:`Clock` as ``"clock"`` and a
            :class:`Window` as ``"window"``.
        step: one training step; returns named scalar tensors to average in the log.
        schedule: how long and how often.
        validate: returns a metrics record (without ``step``) for the validation split.
        lr: the current learning rate, for the log.
        stop_after: stop (after checkpointing) once this many steps are done.
        should_stop: polled after every step; True checkpoints and stops.
        progress: show progress.
        seed: when given, each step runs inside
            :func:`~manytask.nn.global_rng_untouched` seeded with
            :func:`~manytask.nn.derived_seed` ``(seed, "step", step)``, so dropout masks are the
            same on every run and across a resume, and the caller's random state is unchanged.
        device: the run's device (its CUDA generator is forked too).
    """
    clock, window = parts["clock"], parts["window"]
    assert isinstance(clock, Clock) and isinstance(window, Window)
    end = schedule.total if stop_after is None else min(stop_after, schedule.total)
    t0 = time.perf_counter() - clock.elapsed
    with progress_bar(
        total=schedule.total, desc="train", enabled=progress, initial=clock.step, unit="step"
    ) as bar:
        while clock.step < end:
            if seed is None:
                values = step()
            else:
                with global_rng_untouched(derived_seed(seed, "step", clock.step), device):
                    values = step()
            clock.step += 1
            clock.elapsed = time.perf_counter() - t0
            window.add(values)
            bar.update(1)
            if clock.step % schedule.log_every == 0 or clock.step == schedule.total:
                means = window.means()
                run.log(
                    {"step": clock.step, "split": "train", **means, "lr": lr(),
                     "elapsed_s": round(clock.elapsed, 3)}
                )  # fmt: skip
                bar.set_postfix(**{k: f"{v:.4g}" for k, v in means.items()})
                window.reset()
            if (
                validate is not None
                and schedule.val_every
                and (
                    clock.step % schedule.val_every == 0
                    or (schedule.val_at_end and clock.step == schedule.total)
                )
            ):
                run.log({"step": clock.step, "split": "val", **validate()})
            if clock.step % schedule.checkpoint_every == 0 or clock.step == end:
                save_state(run, parts)
            elif should_stop is not None and should_stop():
                save_state(run, parts)
                break
    return clock.step >= schedule.total
