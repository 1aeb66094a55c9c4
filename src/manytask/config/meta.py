"""The meta-learning family: episodes of N-way K-shot tasks (or few-shot regression).

A recipe of this family::

    family: meta
    data: {dataset: omniglot, image_size: 28, split: vinyals}      # a task source + its args
    model: {learner: protonet, args: {}, encoder: conv4, encoder_args: {hidden: 64}}
    objective: auto                                                 # the data's default
    train: {episodes: 20000, episode: {ways: 60, shots: 1, queries: 5, tasks: 1}, ...}
    eval: {episode: {ways: 5, shots: 1, queries: 15}, episodes: 600, seed: 0}

``data``, ``model.args`` and ``model.encoder_args`` are checked against the constructors of
the registered task source, learner and encoder (:mod:`manytask.registry`): their keys and
types come from the signatures, and the resolved config lists every argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from manytask.typed import (
    ConfigError,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Range,
    coerce,
)

__all__ = [
    "EvalConfig",
    "EvalEpisodeConfig",
    "MetaConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "TrainEpisodeConfig",
]

Ways = Annotated[int, Range(min=2)]
LEARNER_INJECTED = ("encoder", "ways", "in_shape", "out_features")
ENCODER_INJECTED = ("in_shape", "in_channels", "in_features")
SOURCE_INJECTED = ("data_dir", "cache_dir", "progress")


@dataclass
class TrainEpisodeConfig:
    """The shape of a meta-training batch: ``tasks`` tasks of ``ways``-way ``shots``-shot.

    ``ways`` is required for classification data and must stay unset (null) for regression.
    """

    ways: Ways | None = None
    shots: PositiveInt = 1
    queries: PositiveInt = 15
    tasks: PositiveInt = 1


@dataclass
class EvalEpisodeConfig:
    """The shape of one evaluation task (evaluation batches are sized by ``eval``)."""

    ways: Ways | None = None
    shots: PositiveInt = 1
    queries: PositiveInt = 15


@dataclass
class ModelConfig:
    """The meta-learner and its encoder, each by registry name with typed arguments."""

    learner: str = "protonet"
    args: dict[str, Any] = field(default_factory=dict)
    encoder: str | None = "conv4"
    encoder_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """The outer optimiser and its learning-rate schedule.

    ``schedule``: ``"step"`` multiplies the rate by ``gamma`` every ``step_size`` episodes;
    ``"cosine"`` anneals it to ``lr * min_lr_ratio`` over the run; ``"constant"`` keeps it.
    ``warmup`` episodes ramp it up linearly first. ``grad_clip`` caps the gradient norm.
    """

    optimizer: Literal["adam", "sgd"] = "adam"
    lr: PositiveFloat = 1e-3
    weight_decay: Annotated[float, Range(min=0)] = 0.0
    momentum: Annotated[float, Range(min=0, max=1)] = 0.0
    schedule: Literal["step", "cosine", "constant"] = "step"
    step_size: PositiveInt = 2000
    gamma: Annotated[float, Range(min=0, max=1, open=True)] = 0.5
    min_lr_ratio: Annotated[float, Range(min=0, max=1)] = 0.0
    warmup: NonNegativeInt = 0
    grad_clip: PositiveFloat | None = None


@dataclass
class TrainConfig:
    """The meta-training loop.

    ``precision="bf16"`` runs the training forward pass under ``torch.autocast`` with
    bfloat16 (weights, optimiser and losses stay fp32); evaluation always runs in fp32.
    ``max_batch_pixels`` bounds the input values (images x pixels) of one training batch, so
    an impossible request fails when the config is loaded instead of in the allocator.
    ``keep`` says which weights the run ends with (and tests, and saves as ``final.pt``):
    ``"last"``, those of the last step, or ``"best"``, those of the validation with the best
    metric (every ``val_every`` steps and after the last step, so it needs
    ``val_every > 0``), saved to ``checkpoints/best.pt`` whenever the metric improves.
    """

    episodes: PositiveInt = 1000
    episode: TrainEpisodeConfig = field(default_factory=TrainEpisodeConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    precision: Literal["fp32", "bf16"] = "fp32"
    log_every: PositiveInt = 50
    checkpoint_every: PositiveInt = 500
    val_every: NonNegativeInt = 0
    val_episodes: PositiveInt = 100
    max_batch_pixels: PositiveInt = 8_000_000
    tensorboard: bool = False
    keep: Literal["last", "best"] = "last"


@dataclass
class EvalConfig:
    """Meta-test protocol: fixed, seeded tasks, identical on every run and machine.

    Evaluation batches hold at most ``batch_size`` tasks and at most ``max_batch_pixels``
    input values; a single task larger than ``max_batch_pixels`` is an error at load time.
    """

    episode: EvalEpisodeConfig = field(default_factory=EvalEpisodeConfig)
    episodes: PositiveInt = 600
    seed: NonNegativeInt = 0
    batch_size: PositiveInt = 50
    max_batch_pixels: PositiveInt = 8_000_000


@dataclass
class MetaConfig:
    """Everything a meta-learning run needs; saved resolved as ``config.yaml``."""

    trainer: ClassVar[str] = "manytask.train.meta"

    family: Literal["meta"] = "meta"
    schema: int = 2
    name: str = "run"
    description: str = ""
    seed: NonNegativeInt = 0
    device: str = "auto"
    quiet: bool = False
    data: dict[str, Any] = field(default_factory=lambda: {"dataset": "omniglot"})
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: str = "auto"
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # -- checks that span several keys --------------------------------------------------------

    def source(self) -> Any:
        """The task source named by ``data`` (built, not loaded: no data is read)."""
        from manytask.registry import TASKS

        args = {k: v for k, v in self.data.items() if k != "dataset"}
        return TASKS.get(str(self.data["dataset"]))(**args)

    def check(self) -> None:
        """Check the rules between keys and fill every registered part's arguments.

        Raises:
            ConfigError: naming the key, the problem and the fix.
        """
        from manytask.objectives import get_objective
        from manytask.registry import ENCODERS, LEARNERS, TASKS

        # The task source and its typed arguments.
        dataset = self.data.get("dataset")
        if not isinstance(dataset, str):
            raise ConfigError(
                f"data.dataset: name a task source, one of {', '.join(TASKS.names())}"
            )
        args = {k: v for k, v in self.data.items() if k != "dataset"}
        typed = TASKS.check_args(dataset, args, injected=SOURCE_INJECTED, where="data")
        self.data = {"dataset": dataset, **typed}
        source = self.source()
        problem = source.problem

        # The objective must fit the data.
        if self.objective == "auto":  # the learner's own for this problem (see MetaLearner)
            learner_cls = LEARNERS.get(self.model.learner)
            self.objective = getattr(learner_cls, f"{problem}_objective", problem)
        try:
            objective = get_objective(self.objective)
        except ValueError as exc:
            raise ConfigError(f"objective: {exc}") from None
        if objective.problem != problem:
            raise ConfigError(
                f"objective: {self.objective!r} is for {objective.problem} but data "
                f"{dataset!r} is a {problem} problem; use objective: auto"
            )

        # The learner, its arguments, and its encoder.
        m = self.model
        cls = LEARNERS.get(m.learner)
        if problem not in getattr(cls, "problems", ("classification",)):
            raise ConfigError(
                f"model.learner: {m.learner!r} does not do {problem} (it does "
                f"{', '.join(cls.problems)}); pick another learner or data set"
            )
        wants = getattr(cls, "regression_objective", "regression")
        if problem == "regression" and self.objective != wants:
            raise ConfigError(
                f"objective: learner {m.learner!r} makes predictions for the objective "
                f"{wants!r}, not {self.objective!r}; set objective: {wants} (or auto)"
            )
        m.args = LEARNERS.check_args(
            m.learner, m.args, injected=LEARNER_INJECTED, where="model.args"
        )
        if getattr(source, "layout", "episodes") == "sequence" and m.args.get("protocol") != (
            "online"
        ):
            # The query set of a sequence episode is its support set: only a learner that
            # predicts each step from the steps before it may see one.
            raise ConfigError(
                f"model.args.protocol: data {dataset!r} delivers sequences whose query set is "
                "the support sequence itself, so a learner must read them online (each step "
                "predicted from the steps before it); use a learner with protocol: online "
                "(learner: mann, args: {protocol: online})"
            )
        if LEARNERS.takes(m.learner, "encoder"):
            if m.encoder is None:
                raise ConfigError(
                    f"model.encoder: learner {m.learner!r} needs an encoder; one of "
                    f"{', '.join(ENCODERS.names())}"
                )
            m.encoder_args = ENCODERS.check_args(
                m.encoder, m.encoder_args, injected=ENCODER_INJECTED, where="model.encoder_args"
            )
        elif m.encoder is not None or m.encoder_args:
            raise ConfigError(
                f"model.encoder: learner {m.learner!r} builds its own network and takes no "
                "encoder; set model.encoder: null and remove model.encoder_args"
            )

        self._check_episodes(problem, m.learner, LEARNERS.takes(m.learner, "ways"), source)
        if self.train.keep == "best" and self.train.val_every == 0:
            raise ConfigError(
                "train.keep: 'best' keeps the weights of the best validation, but "
                "train.val_every=0 turns validation off; set train.val_every=N (validate every "
                "N steps), or train.keep=last to end with the last weights"
            )
        try:
            coerce(self.device.split(":")[0], Literal["auto", "cpu", "cuda", "mps"], "device")
        except ConfigError:
            raise ConfigError(
                f"device: {self.device!r} is not a device; use auto, cpu, cuda or cuda:N"
            ) from None

    def _check_episodes(self, problem: str, learner: str, fixed_ways: bool, source: Any) -> None:
        tr, ev = self.train.episode, self.eval.episode
        if problem == "classification":
            for key, ep in (("train.episode", tr), ("eval.episode", ev)):
                if ep.ways is None:
                    raise ConfigError(
                        f"{key}.ways: classification data needs the number of ways "
                        f"(e.g. {key}.ways=5)"
                    )
            if fixed_ways and ev.ways != tr.ways:
                raise ConfigError(
                    f"eval.episode.ways={ev.ways} but train.episode.ways={tr.ways}: learner "
                    f"{learner!r} has an output layer with one unit per class, built for "
                    f"train.episode.ways={tr.ways}, so it can only be tested on "
                    f"{tr.ways}-way tasks. Set eval.episode.ways={tr.ways}, or train at "
                    f"{ev.ways} ways."
                )
        else:
            for key, ep in (("train.episode", tr), ("eval.episode", ev)):
                if ep.ways is not None:
                    raise ConfigError(
                        f"{key}.ways: {problem} tasks have no classes; remove {key}.ways "
                        "(shots and queries are the numbers of support and query points)"
                    )
        per_example = math.prod(source.in_shape)
        ways = tr.ways or 1
        train_pixels = tr.tasks * ways * (tr.shots + tr.queries) * per_example
        if train_pixels > self.train.max_batch_pixels:
            raise ConfigError(
                f"train.episode: one training batch holds {train_pixels:,} input values "
                f"({tr.tasks} tasks x {ways} ways x {tr.shots + tr.queries} examples x "
                f"{per_example} values), over train.max_batch_pixels="
                f"{self.train.max_batch_pixels:,}. Use fewer tasks, ways or queries, or raise "
                "train.max_batch_pixels if the machine has the memory."
            )
        eval_pixels = (ev.ways or 1) * (ev.shots + ev.queries) * per_example
        if eval_pixels > self.eval.max_batch_pixels:
            raise ConfigError(
                f"eval.episode: one test task holds {eval_pixels:,} input values, over "
                f"eval.max_batch_pixels={self.eval.max_batch_pixels:,}. Use fewer ways or "
                "queries, or raise eval.max_batch_pixels if the machine has the memory."
            )

    def eval_batch_size(self) -> int:
        """Tasks per evaluation batch: ``eval.batch_size`` capped by ``eval.max_batch_pixels``."""
        ev = self.eval.episode
        per_task = (ev.ways or 1) * (ev.shots + ev.queries) * math.prod(self.source().in_shape)
        return max(1, min(self.eval.batch_size, self.eval.max_batch_pixels // per_task))
