"""The multi-task family: set up, one step, evaluation and the end of a run.

One step (CS330's multi-task training loop)::

    tasks  = task_sampler.sample()                     # [k] of the K tasks (all by default)
    xs, ys = batches of each task                      # one shared batch for shared inputs
    outs   = model.forward_tasks(xs, tasks)            # the shared trunk runs once
    losses = [task_loss(spec_i, out_i, y_i)]           # [k], each task's own loss
    optimizer.zero_grad(set_to_none=True)
    method.backward(losses, model, info)               # the seam: fills .grad (mtl/base.py)
    optimizer.step(); scheduler.step()

Everything that can be wrong with a request (unknown tasks, a backbone that does not fit the
inputs, weights for tasks the data does not have, a baseline that does not cover the tasks)
fails in :func:`setup`, before the run folder exists.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from manytask.config import to_dict
from manytask.config.mtl import DATA_INJECTED, MTLConfig, datasets
from manytask.data.multitask import MultiTaskData, TaskSpec, to_float
from manytask.mtl.base import INJECTED, MethodState, MTLMethod, StepInfo
from manytask.mtl.delta import delta_m
from manytask.mtl.diagnostics.affinity import AffinityProbe
from manytask.mtl.losses import task_loss
from manytask.mtl.sampling import EpochBatches, TaskSampler
from manytask.registry import MTL_METHODS
from manytask.train.build import build_optimizer, build_scheduler
from manytask.train.context import RunContext
from manytask.train.evaluate import TaskScores, evaluate_tasks
from manytask.train.loop import Clock, Schedule, TrainingDiverged, Window, fit, restore_state
from manytask.train.rundir import RunDir
from manytask.typed import ConfigError, closest

__all__ = [
    "MTLResult",
    "MTLSetup",
    "TaskSpecs",
    "build_model",
    "evaluate_run",
    "load_data",
    "load_model",
    "select_tasks",
    "setup",
    "train",
]

log = logging.getLogger("manytask")


# --- data, model, method ----------------------------------------------------------------------


def select_tasks(data: MultiTaskData, names: Sequence[str] | None) -> MultiTaskData:
    """``data`` restricted to the tasks ``names`` (in that order); ``None`` keeps every task.

    Raises:
        ConfigError: a name the data set does not have (the closest and the valid ones named).
    """
    if names is None:
        return data
    index = {t.name: i for i, t in enumerate(data.tasks)}
    for n in names:
        if n not in index:
            raise ConfigError(
                f"tasks: data set {data.name!r} has no task {n!r}.{closest(n, list(index))} "
                f"Its tasks: {', '.join(index)}"
            )
    keep = [index[n] for n in names]
    label_set = data.label_set_metrics if len(keep) > 1 else ()
    return MultiTaskData(
        data.name,
        tuple(data.tasks[i] for i in keep),
        tuple(data.train[i] for i in keep),
        tuple(data.val[i] for i in keep),
        tuple(data.test[i] for i in keep),
        data.input_shape,
        data.shared_inputs,
        label_set,
    )


def load_data(cfg: MTLConfig, ctx: RunContext) -> MultiTaskData:
    """The run's data set (its selected tasks), from the data folders of ``ctx``."""
    reg = datasets()
    name = str(cfg.data["dataset"])
    args = {k: v for k, v in cfg.data.items() if k != "dataset"}
    supplied = {"data_dir": ctx.data_dir, "cache_dir": ctx.cache_dir, "progress": ctx.progress}
    for key in DATA_INJECTED:
        if reg.takes(name, key):
            args[key] = supplied[key]
    try:
        data = reg.get(name)(**args)
    except ValueError as exc:
        raise ConfigError(f"data: {exc}") from None
    return select_tasks(data, cfg.tasks)


def build_model(cfg: MTLConfig, tasks: Sequence[Any], input_shape: Sequence[int]) -> Any:
    """The run's conditioning model for ``tasks``, every parameter drawn from ``cfg.seed``."""
    from manytask.nn import build_conditioning, global_rng_untouched, init_parameters

    m = cfg.model
    with global_rng_untouched():  # layer constructors draw from the global generator
        try:
            model = build_conditioning(
                m.conditioning, list(tasks), tuple(input_shape), backbone=m.backbone,
                backbone_args=m.backbone_args, descriptor=m.descriptor,
                text_encoder=m.text_encoder, text_encoder_args=m.text_encoder_args, **m.args,
            )  # fmt: skip
        except ValueError as exc:
            raise ConfigError(f"model: {exc}") from None
        return init_parameters(model, cfg.seed)


def build_method(cfg: MTLConfig, data: MultiTaskData) -> MTLMethod:
    """The run's multi-task method, with the run-injected arguments filled in."""
    name = cfg.method.name
    args = dict(cfg.method.args)
    supplied = {
        "task_names": data.task_names,
        "task_weights": tuple(t.weight for t in data.tasks),
    }
    for key in INJECTED:
        if MTL_METHODS.takes(name, key):
            args[key] = supplied[key]
    try:
        method: MTLMethod = MTL_METHODS.get(name)(**args)
        method.init(data.num_tasks)  # weights of the wrong length fail now
    except ValueError as exc:
        raise ConfigError(f"method.args: {exc}") from None
    return method


class TaskSpecs:
    """The run's task specs and input shape (a checkpoint part), so a trained model can be
    rebuilt without its data (``manytask.load_run``)."""

    def __init__(self, tasks: Sequence[TaskSpec], input_shape: Sequence[int]) -> None:
        self.tasks = tuple(tasks)
        self.input_shape = tuple(int(s) for s in input_shape)

    def state_dict(self) -> dict[str, Any]:
        specs = [{**asdict(t), "metrics": list(t.metrics), "metadata": list(t.metadata)}
                 for t in self.tasks]  # fmt: skip
        return {"tasks": specs, "input_shape": list(self.input_shape)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state != self.state_dict():
            raise ValueError(
                "the checkpoint was written for other tasks or inputs than this run's data; "
                "resume with the run's own config and data"
            )

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TaskSpecs:
        tasks = [
            TaskSpec(**{**t, "metrics": tuple(t["metrics"]), "metadata": tuple(t["metadata"])})
            for t in state["tasks"]
        ]
        return cls(tasks, state["input_shape"])


# --- set-up -------------------------------------------------------------------------------------


@dataclass
class MTLSetup:
    """Everything a multi-task run holds while it trains."""

    cfg: MTLConfig
    ctx: RunContext
    data: MultiTaskData
    model: Any
    method: MethodState
    optimizer: torch.optim.Optimizer
    scheduler: Any
    task_sampler: TaskSampler
    batches: EpochBatches
    train_x: list[Tensor]
    train_y: list[Tensor]
    baseline: dict[str, Any] | None
    affinity: AffinityProbe | None = None

    def parts(self) -> dict[str, Any]:
        """The stateful parts a checkpoint holds (one line per part)."""
        parts = {
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "task_sampler": self.task_sampler,
            "batch_sampler": self.batches,
            "method": self.method,
            "specs": TaskSpecs(self.data.tasks, self.data.input_shape),
            "window": Window(),
            "clock": Clock(),
        }
        if self.affinity is not None:  # only runs that measure it have (and need) the part
            parts["affinity"] = self.affinity
        return parts


def _check_batch(cfg: MTLConfig, data: MultiTaskData) -> None:
    tr = cfg.train
    k = tr.tasks_per_step or data.num_tasks
    k = min(k, data.num_tasks)
    rows = tr.batch_size * (1 if data.shared_inputs else k)
    values = rows * math.prod(data.input_shape)
    if values > tr.max_batch_values:
        raise ConfigError(
            f"train.batch_size: one step holds {values:,} input values ({rows} examples x "
            f"{math.prod(data.input_shape)} values), over train.max_batch_values="
            f"{tr.max_batch_values:,}. Use a smaller batch_size or tasks_per_step, or raise "
            "train.max_batch_values if the machine has the memory."
        )


def setup(cfg: MTLConfig, ctx: RunContext) -> MTLSetup:
    """Build data, model, method, optimiser and samplers of a run (and read its baseline).

    Everything that needs the data is checked here, before any training and before the run
    folder is created.
    """
    from manytask.train.compare import baseline_values

    device = ctx.device
    data = load_data(cfg, ctx)
    empty = [t.name for t, n in zip(data.tasks, data.sizes("train"), strict=True) if n == 0]
    if empty:
        raise ConfigError(f"tasks: {', '.join(empty)} ha(s) no training examples; leave it out")
    _check_batch(cfg, data)
    baseline = None
    if cfg.eval.baseline:
        baseline = baseline_values(cfg.eval.baseline, data.task_names)
    model = build_model(cfg, data.tasks, data.input_shape).to(device)
    method = MethodState(build_method(cfg, data), data.num_tasks, device)
    optimizer = build_optimizer(model.parameters(), cfg.train.optim)
    scheduler = build_scheduler(optimizer, cfg.train.optim, cfg.train.steps)
    tr = cfg.train
    if tr.tasks_per_step is not None and tr.tasks_per_step >= data.num_tasks:
        log.info(
            "train.tasks_per_step=%d covers all %d tasks: every task at every step, no sampling",
            tr.tasks_per_step,
            data.num_tasks,
        )
    sizes = data.sizes("train")
    task_sampler = TaskSampler(
        sizes, tr.tasks_per_step, tr.task_sampling, tr.temperature, seed=cfg.seed
    )
    train = data.split("train")
    if data.shared_inputs:
        train_x = [train[0].x.to(device)]
        batches = EpochBatches([sizes[0]], tr.batch_size, seed=cfg.seed)
    else:
        train_x = [p.x.to(device) for p in train]
        batches = EpochBatches(sizes, tr.batch_size, seed=cfg.seed)
    train_y = [p.y.to(device) for p in train]
    return MTLSetup(
        cfg, ctx, data, model, method, optimizer, scheduler, task_sampler, batches, train_x,
        train_y, baseline, build_affinity(cfg, data.num_tasks),
    )  # fmt: skip


def build_affinity(cfg: MTLConfig, num_tasks: int) -> AffinityProbe | None:
    """The task-affinity probe of ``diagnostics.affinity_every`` (``None`` when it is off)."""
    d = cfg.diagnostics
    if not d.affinity_every:
        return None
    lr = d.affinity_lr if d.affinity_lr is not None else cfg.train.optim.lr
    probe = AffinityProbe(d.affinity_every, lr, d.affinity_groups, seed=cfg.seed)
    probe.init(num_tasks)
    return probe


# --- one step -------------------------------------------------------------------------------


def _batch(s: MTLSetup, tasks: list[int]) -> tuple[list[Tensor], list[Tensor]]:
    device = s.ctx.device
    if s.data.shared_inputs:
        idx = s.batches.next(0).to(device)
        x = to_float(s.train_x[0][idx])
        return [x] * len(tasks), [s.train_y[t][idx] for t in tasks]
    xs, ys = [], []
    for t in tasks:
        idx = s.batches.next(t).to(device)
        xs.append(to_float(s.train_x[t][idx]))
        ys.append(s.train_y[t][idx])
    return xs, ys


def _losses(s: MTLSetup, tasks: list[int], xs: list[Tensor], ys: list[Tensor]) -> Tensor:
    outs = s.model.forward_tasks(xs, tasks)
    specs = s.data.tasks
    return torch.stack([task_loss(specs[t], o, y) for t, o, y in zip(tasks, outs, ys, strict=True)])


def make_step(s: MTLSetup, run: RunDir, clock: Clock) -> Callable[[], Mapping[str, Tensor]]:
    """One multi-task update: sample tasks and data, per-task losses, the method, the step."""
    clip = s.cfg.train.optim.grad_clip
    names = s.data.task_names
    device = s.ctx.device
    after = s.method.method.needs_losses_after_step

    def step() -> Mapping[str, Tensor]:
        task_ids = s.task_sampler.sample()
        tasks = task_ids.tolist()
        xs, ys = _batch(s, tasks)
        # Each task's rows in the concatenated batch (None: the tasks share their inputs), so a
        # gradient method gets every task's gradient out of one backward pass.
        segments = None if s.data.shared_inputs else [x.shape[0] for x in xs]
        probe = s.affinity if s.affinity is not None and s.affinity.due(clock.step) else None
        with (
            s.method.method.forward_context(s.model, segments),
            probe.capture(s.model, clock.step) if probe else contextlib.nullcontext(),
        ):
            losses = _losses(s, tasks, xs, ys)
        if not bool(torch.isfinite(losses).all()):
            bad = [names[t] for t, v in zip(tasks, losses.tolist(), strict=True)
                   if not math.isfinite(v)]  # fmt: skip
            raise TrainingDiverged(
                f"the training loss of task(s) {', '.join(bad)} is not finite at step "
                f"{clock.step + 1}; the last good state is in {run.last_checkpoint}. Lower "
                "train.optim.lr (or set train.optim.grad_clip) and resume, or start anew."
            )
        info = StepInfo(task_ids.to(device), s.data.num_tasks, clock.step)
        s.optimizer.zero_grad(set_to_none=True)
        extra = {}
        if probe is not None:  # TAG lookahead on this batch; changes nothing of the step
            extra = probe.measure(
                losses, s.model, segments, task_ids, lambda: _losses(s, tasks, xs, ys)
            )
        logs = {**s.method.backward(losses, s.model, info), **extra}
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(s.model.parameters(), clip)
        s.optimizer.step()
        s.scheduler.step()
        if after:
            with torch.no_grad():
                s.method.after_step(_losses(s, tasks, xs, ys), info)
        values: dict[str, Tensor] = {"loss": logs.get("objective", losses.sum()).detach()}
        detached = losses.detach()
        for j, t in enumerate(tasks):
            values[f"loss/{names[t]}"] = detached[j]
        for key, v in logs.items():
            if key == "objective":
                continue
            if v.dim() == 0:
                values[key] = v.detach()
            else:
                for j, t in enumerate(tasks):
                    values[f"{key}/{names[t]}"] = v[j].detach()
        return values

    return step


# --- train, finish ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MTLResult:
    """What :func:`train` returns: the run folder, the test scores and the results dict."""

    run: RunDir
    test: TaskScores
    results: dict[str, Any]

    def summary(self) -> str:
        """One line for the command line: the mean of every metric over the tasks."""
        return f"{self.results['name']}: {summary_line(self.results)}"


def summary_line(results: Mapping[str, Any]) -> str:
    """``test mean accuracy 91.2 +- 1.3 (50 tasks) ... Delta_m +1.2%`` from a results dict."""
    test = results["test"]
    parts = []
    for metric, s in test["summary"].items():
        ci = f" +- {s['ci95']:.3g}" if s["tasks"] > 1 else ""
        parts.append(f"{metric} {s['mean']:.4g}{ci}")
    tasks = len(test["per_task"])
    line = f"test mean over {tasks} task{'s' if tasks > 1 else ''}: " + ", ".join(parts)
    if test.get("label_set"):
        line += "; " + ", ".join(f"{k} {v:.4g}" for k, v in test["label_set"].items())
    if "delta_m" in results:
        d = results["delta_m"]
        better = "higher" if d["higher_is_better"] else "lower"
        line += f"; Delta_m {d['value']:+.2f}% ({d['definition']}, {better} is better)"
    return line


def train(
    cfg: MTLConfig,
    run_dir: str | os.PathLike[str] | RunDir,
    ctx: RunContext | None = None,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> MTLResult | None:
    """Train the multi-task config ``cfg`` in ``run_dir``, then evaluate every task on test.

    Args:
        cfg: the checked config (:func:`manytask.config.load_config`).
        run_dir: the run folder; created for a new run, read for ``resume=True``.
        ctx: where to run; default :meth:`RunContext.from_environment` of ``cfg``.
        resume: continue from ``checkpoints/last.pt``.
        stop_after: stop (after checkpointing) once this many steps are done; returns None.
        should_stop: polled after every step; True checkpoints and returns None.

    Returns:
        The test scores and results, or ``None`` if the run stopped early.
    """
    ctx = ctx or RunContext.from_environment(cfg.device, quiet=cfg.quiet)
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir, writer=ctx.is_writer)
    if not resume:
        run.check_new()
    s = setup(cfg, ctx)
    parts = s.parts()
    if resume:
        run.clean_temp()
        try:
            restore_state(run, parts)
        except ValueError as exc:
            raise ConfigError(f"{run.last_checkpoint}: {exc}") from None
        run.truncate_metrics(parts["clock"].step)
        log.info("resumed %s at step %d", run.path, parts["clock"].step)
    else:
        run.create(to_dict(cfg))
    tb = None
    if cfg.train.tensorboard and run.writer:
        from manytask.train.tensorboard import TensorBoardSink

        tb = TensorBoardSink(run.path / "tensorboard")
        run.sinks.append(tb)
    try:
        return _train(s, run, parts, stop_after=stop_after, should_stop=should_stop)
    finally:
        if tb is not None:
            run.sinks.remove(tb)
            tb.close()


def _has_val(data: MultiTaskData) -> bool:
    return sum(data.sizes("val")) > 0


def _train(
    s: MTLSetup,
    run: RunDir,
    parts: dict[str, Any],
    *,
    stop_after: int | None,
    should_stop: Callable[[], bool] | None,
) -> MTLResult | None:
    cfg = s.cfg

    def validate() -> dict[str, Any]:
        scores = evaluate_tasks(s.model, s.data, "val", batch_size=cfg.eval.batch_size)
        return scores.log_record()

    val_every = cfg.train.val_every if _has_val(s.data) else 0
    s.model.train()
    done = fit(
        run,
        parts,
        make_step(s, run, parts["clock"]),
        Schedule(cfg.train.steps, cfg.train.log_every, cfg.train.checkpoint_every, val_every),
        validate=validate,
        lr=lambda: float(s.scheduler.get_last_lr()[0]),
        stop_after=stop_after,
        should_stop=should_stop,
        progress=s.ctx.progress,
        seed=cfg.seed,
        device=s.ctx.device,
    )
    if not done:
        return None
    return finish(s, run, train_seconds=parts["clock"].elapsed)


def _directions(scores: TaskScores) -> dict[str, bool]:
    return dict(scores.directions)


def _gradient_conflict(state: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any] | None:
    """The mean pairwise cosine of the task gradients over training, when the method kept it
    (gradient methods do: :mod:`manytask.mtl.gradient_methods`)."""
    if "cos_sum" not in state or "cos_count" not in state:
        return None
    from manytask.mtl.diagnostics import mean_cosines

    cos = mean_cosines(state["cos_sum"].cpu(), state["cos_count"].cpu())
    rows = [[None if v != v else round(float(v), 4) for v in row] for row in cos.tolist()]
    return {"tasks": list(names), "mean_cosine": rows}


def finish(s: MTLSetup, run: RunDir, *, train_seconds: float) -> MTLResult:
    """Save the trained model, evaluate every task, write results and the report."""
    from manytask.metrics import get_metric
    from manytask.train.report import write_mtl_report

    cfg, data = s.cfg, s.data
    specs = TaskSpecs(data.tasks, data.input_shape)
    run.save_checkpoint(
        {"model": s.model.state_dict(), "specs": specs.state_dict()}, run.final_weights
    )
    t0 = time.perf_counter()
    bs = cfg.eval.batch_size
    test = evaluate_tasks(s.model, data, "test", batch_size=bs)
    val = evaluate_tasks(s.model, data, "val", batch_size=bs) if _has_val(data) else None
    counts = s.model.parameter_counts()
    metrics = {
        m: {"higher_is_better": hib, "unit": get_metric(m).unit}
        for m, hib in test.directions.items()
    }
    results: dict[str, Any] = {
        "name": cfg.name,
        "family": cfg.family,
        "dataset": data.name,
        "tasks": list(data.task_names),
        "kinds": {t.name: t.kind for t in data.tasks},
        "headline": {t.name: t.headline for t in data.tasks},
        "task_metrics": {t.name: list(t.metrics) for t in data.tasks},
        "model": cfg.model.conditioning,
        "backbone": cfg.model.backbone,
        "method": {"name": cfg.method.name, "repr": repr(s.method.method)},
        "test": test.as_dict(),
        "metrics": metrics,
        "parameters": {
            "shared": counts["shared"],
            "per_task": dict(zip(data.task_names, counts["per_task"], strict=True)),
            "total": sum(p.numel() for p in s.model.parameters()),
        },
        "train_steps": cfg.train.steps,
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": 0.0,
        "device": str(s.ctx.device),
        "seed": cfg.seed,
    }
    if val is not None:
        results["val"] = val.as_dict()
    conflict = _gradient_conflict(s.method.state, data.task_names)
    if conflict is not None:
        results["gradient_conflict"] = conflict
    if s.affinity is not None:
        results["task_affinity"] = s.affinity.summary(data.task_names)
    if s.baseline is not None:
        d = delta_m(test.per_task, s.baseline["values"], _directions(test), cfg.eval.delta_m)
        results["delta_m"] = {**d.as_dict(), "baseline": s.baseline["sources"]}
    results["eval_seconds"] = round(time.perf_counter() - t0, 1)
    run.log({"step": cfg.train.steps, "split": "test", **test.log_record()})
    run.write_json("results.json", results)
    if run.writer:
        write_mtl_report(run)
    return MTLResult(run=run, test=test, results=results)


# --- a trained run back ----------------------------------------------------------------------


def load_model(cfg: MTLConfig, state: Mapping[str, Any]) -> Any:
    """The multi-task model of ``cfg`` with the trained weights (``final.pt`` or checkpoint
    parts ``{"model": ..., "specs": ...}``); no data is read."""
    specs = TaskSpecs.from_state(state["specs"])
    model = build_model(cfg, specs.tasks, specs.input_shape)
    model.load_state_dict(state["model"])
    return model


def evaluate_run(cfg: MTLConfig, model: Any, ctx: RunContext) -> tuple[TaskScores, dict[str, Any]]:
    """Every task's test metrics of a trained model; returns the scores and a summary dict."""
    data = load_data(cfg, ctx)
    scores = evaluate_tasks(model.to(ctx.device), data, "test", batch_size=cfg.eval.batch_size)
    return scores, scores.as_dict()
