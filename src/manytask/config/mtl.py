"""The multi-task family: K tasks trained together, ``min_theta sum_i w_i L_i`` and its variants.

A recipe of this family::

    family: mtl
    data: {dataset: census_income, regression: age}      # a multi-task data set + its args
    tasks: null                                          # or a subset: [income, age]
    model:
      conditioning: mmoe                                 # how the model conditions on z_i
      args: {num_experts: 8}
      backbone: mlp
      backbone_args: {hidden: [128]}
      descriptor: one_hot                                # z_i: one_hot, metadata, text
    method: {name: fixed, args: {weights: {age: 0.5}}}   # losses -> update (MTL_METHODS)
    train:
      steps: 2000
      batch_size: 256                                    # examples per task per step
      tasks_per_step: null                               # null = every task every step
      task_sampling: uniform                             # or proportional, temperature
      optim: {lr: 1e-3, schedule: cosine}
    eval: {batch_size: 4096, baseline: [runs/census-single], delta_m: libmtl}
    diagnostics: {affinity_every: 0}                     # N > 0: TAG task affinity every N steps

``data`` is checked against the data set's loader (:data:`manytask.data.registry.DATASETS`),
``model.args`` against the conditioning model's constructor
(:data:`manytask.nn.CONDITIONING`), ``model.backbone_args`` against the backbone's, and
``method.args`` against the method's (:data:`manytask.registry.MTL_METHODS`), all when the
config is loaded, so ``manytask validate`` catches a misspelt argument without reading any
data. What needs the data itself (task names in ``tasks`` and in the method's weights, a
convolutional backbone on vector inputs) is checked when the run is set up, before its folder
is created.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from manytask.config.meta import OptimConfig
from manytask.registry import MTL_METHODS, Registry
from manytask.typed import (
    ConfigError,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    closest,
    coerce,
)

__all__ = [
    "DATA_INJECTED",
    "MODEL_INJECTED",
    "MTLConfig",
    "MTLDiagnosticsConfig",
    "MTLEvalConfig",
    "MTLModelConfig",
    "MTLTrainConfig",
    "MethodConfig",
    "backbones",
    "conditioning_models",
    "datasets",
]

DATA_INJECTED = ("data_dir", "cache_dir", "progress")
MODEL_INJECTED = ("backbone", "input_shape", "num_outputs", "descriptors")
BACKBONE_INJECTED = ("in_features", "in_channels")
Descriptor = Literal["one_hot", "metadata", "text"]


def datasets() -> Registry:
    """The multi-task data sets as a registry (name -> loader), for argument checks."""
    from manytask.data.registry import DATASETS

    reg = Registry("multi-task data set", "data.dataset")
    for name, info in DATASETS.items():
        if info.load is not None:
            reg.add(name, info.load)  # type: ignore[arg-type]
    return reg


def conditioning_models() -> Registry:
    """The conditioning models (:data:`manytask.nn.CONDITIONING`) as a registry."""
    from manytask.nn import CONDITIONING

    reg = Registry("conditioning model", "model.conditioning")
    for name, cls in CONDITIONING.items():
        reg.add(name, cls)
    return reg


def backbones() -> Registry:
    """The backbones a conditioning model copies (:data:`manytask.nn.BACKBONES`)."""
    from manytask.nn import BACKBONES

    reg = Registry("backbone", "model.backbone")
    for name, (_, cls, _) in BACKBONES.items():
        reg.add(name, cls)
    return reg


def text_encoders() -> Registry:
    from manytask.nn import TEXT_ENCODERS

    reg = Registry("text encoder", "model.text_encoder")
    for name, cls in TEXT_ENCODERS.items():
        reg.add(name, cls)
    return reg


@dataclass
class MTLModelConfig:
    """The multi-task model ``f_theta(y | x, z_i)``: a conditioning model over a backbone.

    ``descriptor`` is ``z_i`` for the descriptor-conditioned models (``concat``, ``additive``,
    ``multiplicative``, ``film``, ``full_sharing``): ``one_hot``, ``metadata``, ``text`` or a
    list of them (concatenated); the others pick their task parts by index and take
    ``one_hot`` only.
    """

    conditioning: str = "multi_head"
    args: dict[str, Any] = field(default_factory=dict)
    backbone: str = "mlp"
    backbone_args: dict[str, Any] = field(default_factory=dict)
    descriptor: Descriptor | list[Descriptor] = "one_hot"
    text_encoder: str = "hashed_ngrams"
    text_encoder_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodConfig:
    """How the per-task losses become one update: a registered method and its arguments."""

    name: str = "fixed"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class MTLTrainConfig:
    """The multi-task training loop.

    Each step samples ``tasks_per_step`` tasks (``null``: every task, no sampling), then a
    mini-batch of ``batch_size`` examples of each (one shared batch when the tasks share their
    inputs). ``task_sampling`` draws the tasks with probability ``p_i`` proportional to 1
    (``uniform``), to the task's training-set size ``n_i`` (``proportional``) or to
    ``n_i^(1/temperature)`` (``temperature``: 1 is proportional, large is uniform), without
    replacement within a step. Examples are drawn in epochs: a fresh seeded permutation per
    task (or per shared input set) each pass.
    """

    steps: PositiveInt = 1000
    batch_size: PositiveInt = 64
    tasks_per_step: PositiveInt | None = None
    task_sampling: Literal["uniform", "proportional", "temperature"] = "uniform"
    temperature: PositiveFloat = 1.0
    optim: OptimConfig = field(default_factory=OptimConfig)
    log_every: PositiveInt = 50
    checkpoint_every: PositiveInt = 500
    val_every: NonNegativeInt = 0
    max_batch_values: PositiveInt = 50_000_000
    tensorboard: bool = False


@dataclass
class MTLEvalConfig:
    """Evaluation: every task's metrics on its whole validation and test split.

    ``baseline`` names run folders whose per-task test metrics are the reference of
    ``Delta_m`` (single-task runs from ``manytask run RECIPE --single-task``, or any runs that
    together cover every task); ``delta_m`` picks its definition (see
    :mod:`manytask.mtl.delta`).
    """

    batch_size: PositiveInt = 1024
    baseline: list[str] = field(default_factory=list)
    delta_m: Literal["libmtl", "nash_mtl"] = "libmtl"


@dataclass
class MTLDiagnosticsConfig:
    """Opt-in diagnostics of a multi-task run (gradient conflict needs none: gradient methods
    record it for free).

    ``affinity_every: N`` measures TAG's lookahead task affinity (Fifty et al. 2021) every
    ``N`` steps (``0``: never): the step's per-task gradients on the shared parameters (one more
    backward where the one-backward path applies) and ``k + 1`` forward passes of its batch.
    ``results.json`` then holds the mean affinity matrix and the suggested grouping of the
    tasks into at most ``affinity_groups`` networks (``null``: any number) with its predicted
    score; ``report.md`` shows both. ``affinity_lr`` is the lookahead step (``null``: the run's
    ``train.optim.lr``). See :class:`manytask.mtl.diagnostics.AffinityProbe`.
    """

    affinity_every: NonNegativeInt = 0
    affinity_lr: PositiveFloat | None = None
    affinity_groups: PositiveInt | None = None


@dataclass
class MTLConfig:
    """Everything a multi-task run needs; saved resolved as ``config.yaml``."""

    trainer: ClassVar[str] = "manytask.train.mtl"

    family: Literal["mtl"] = "mtl"
    schema: int = 2
    name: str = "run"
    description: str = ""
    seed: NonNegativeInt = 0
    device: str = "auto"
    quiet: bool = False
    data: dict[str, Any] = field(default_factory=lambda: {"dataset": "omniglot_alphabets"})
    tasks: list[str] | None = None
    model: MTLModelConfig = field(default_factory=MTLModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: MTLTrainConfig = field(default_factory=MTLTrainConfig)
    eval: MTLEvalConfig = field(default_factory=MTLEvalConfig)
    diagnostics: MTLDiagnosticsConfig = field(default_factory=MTLDiagnosticsConfig)

    def check(self) -> None:
        """Check the rules between keys and fill every part's arguments with their defaults.

        Raises:
            ConfigError: naming the key, the problem and the fix.
        """
        from manytask.mtl.base import INJECTED

        data = datasets()
        dataset = self.data.get("dataset")
        if not isinstance(dataset, str):
            raise ConfigError(f"data.dataset: name a data set, one of {', '.join(data.names())}")
        if dataset not in data:
            from manytask.data.registry import DATASETS

            hint = (
                " (it is a meta-learning data set; use family: meta)" if dataset in DATASETS else ""
            )
            raise ConfigError(
                f"data.dataset: {dataset!r} is not a multi-task data set{hint}."
                f"{closest(dataset, data.names())} Valid: {', '.join(data.names())}"
            )
        args = {k: v for k, v in self.data.items() if k != "dataset"}
        typed = data.check_args(dataset, args, injected=DATA_INJECTED, where="data")
        self.data = {"dataset": dataset, **typed}

        if self.tasks is not None:
            if not self.tasks:
                raise ConfigError("tasks: an empty list trains nothing; use null for every task")
            dup = sorted({t for t in self.tasks if self.tasks.count(t) > 1})
            if dup:
                raise ConfigError(f"tasks: {dup[0]!r} is listed twice")

        m = self.model
        models = conditioning_models()
        models.get(m.conditioning)  # an unknown name lists the valid ones
        m.args = models.check_args(
            m.conditioning, m.args, injected=MODEL_INJECTED, where="model.args"
        )
        nets = backbones()
        nets.get(m.backbone)
        m.backbone_args = nets.check_args(
            m.backbone, m.backbone_args, injected=BACKBONE_INJECTED, where="model.backbone_args"
        )
        kinds = [m.descriptor] if isinstance(m.descriptor, str) else list(m.descriptor)
        if not kinds:
            raise ConfigError("model.descriptor: give one_hot, metadata, text or a list of them")
        if not models.takes(m.conditioning, "descriptors") and kinds != ["one_hot"]:
            raise ConfigError(
                f"model.descriptor: {m.conditioning!r} picks its task-specific parts by task "
                f"index and reads no descriptor; use one_hot (got {m.descriptor!r}), or a "
                "descriptor-conditioned model (concat, additive, multiplicative, film, "
                "full_sharing)"
            )
        if "text" in kinds:
            enc = text_encoders()
            enc.get(m.text_encoder)
            m.text_encoder_args = enc.check_args(
                m.text_encoder, m.text_encoder_args, injected=(), where="model.text_encoder_args"
            )
        elif m.text_encoder_args:
            raise ConfigError(
                "model.text_encoder_args: only used with descriptor: text; remove them or add "
                "text to model.descriptor"
            )

        MTL_METHODS.get(self.method.name)
        self.method.args = MTL_METHODS.check_args(
            self.method.name, self.method.args, injected=INJECTED, where="method.args"
        )
        if self.method.name == "minmax" and self.train.tasks_per_step is not None:
            raise ConfigError(
                "train.tasks_per_step: the min-max objective is over every task, but this run "
                f"samples {self.train.tasks_per_step} per step (the max would be over the "
                "sampled ones only). Set train.tasks_per_step=null."
            )
        if self.train.task_sampling != "temperature" and self.train.temperature != 1.0:
            raise ConfigError(
                f"train.temperature: only used with train.task_sampling=temperature (it is "
                f"{self.train.task_sampling!r}); remove it or set the sampling"
            )
        d = self.diagnostics
        if d.affinity_every == 0 and (d.affinity_lr is not None or d.affinity_groups is not None):
            raise ConfigError(
                "diagnostics.affinity_lr / affinity_groups: only used when task affinity is "
                "measured; set diagnostics.affinity_every=N (every N steps) or remove them"
            )
        try:
            coerce(self.device.split(":")[0], Literal["auto", "cpu", "cuda", "mps"], "device")
        except ConfigError:
            raise ConfigError(
                f"device: {self.device!r} is not a device; use auto, cpu, cuda or cuda:N"
            ) from None
