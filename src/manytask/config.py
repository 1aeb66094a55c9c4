"""Typed run configuration, checked against dataclass fields.

A recipe (YAML) and ``key=value`` overrides become a :class:`RunConfig`. Every key is checked
against the dataclass fields: an unknown key is an error naming it, the closest valid key and
the full list; a value of the wrong type or outside a ``Literal`` is an error naming the key,
what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

__all__ = [
    "ConfigError",
    "DataConfig",
    "EpisodeConfig",
    "EvalConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "from_dict",
    "load_config",
    "to_dict",
]


class ConfigError(ValueError):
    """A configuration key or value is not valid; the message says which and how to fix it."""


@dataclass
class DataConfig:
    """Where episodes come from."""

    dataset: Literal["omniglot"] = "omniglot"
    image_size: int = 28
    source: Literal["auto", "archives", "embedded"] = "auto"
    split: Literal["vinyals", "lake", "small1", "small2"] = "vinyals"
    train_part: str = "train"
    val_part: str = "val"
    test_part: str = "test"
    rotations: list[int] = field(default_factory=lambda: [0, 90, 180, 270])
    group_by: Literal["none", "alphabet"] = "none"


@dataclass
class EpisodeConfig:
    """An N-way K-shot episode shape and how many tasks form a meta-batch."""

    ways: int = 5
    shots: int = 1
    queries: int = 15
    tasks: int = 1


@dataclass
class ModelConfig:
    """The meta-learner and its backbone."""

    learner: Literal["protonet"] = "protonet"
    encoder: Literal["conv4"] = "conv4"
    hidden: int = 64


@dataclass
class OptimConfig:
    """Adam with a step decay: the learning rate is multiplied by ``gamma`` every ``step_size``."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    step_size: int = 2000
    gamma: float = 0.5


@dataclass
class TrainConfig:
    """The meta-training loop.

    ``precision="bf16"`` runs the training forward pass under ``torch.autocast`` with
    bfloat16 (convolutions and matrix products in bf16, weights, optimiser and losses in
    fp32); evaluation always runs in fp32.
    """

    episodes: int = 1000
    episode: EpisodeConfig = field(default_factory=lambda: EpisodeConfig(60, 1, 5, 1))
    optim: OptimConfig = field(default_factory=OptimConfig)
    precision: Literal["fp32", "bf16"] = "fp32"
    log_every: int = 50
    checkpoint_every: int = 500
    val_every: int = 0
    val_episodes: int = 100


@dataclass
class EvalConfig:
    """Meta-test protocol: fixed, seeded episodes."""

    episode: EpisodeConfig = field(default_factory=lambda: EpisodeConfig(5, 1, 15, 1))
    episodes: int = 600
    seed: int = 0
    batch_size: int = 50


@dataclass
class RunConfig:
    """Everything a run needs; saved resolved as ``config.yaml`` in the run folder."""

    name: str = "run"
    description: str = ""
    seed: int = 0
    device: str = "auto"
    quiet: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


T = TypeVar("T")


def _closest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            close = _closest(str(value), [str(a) for a in allowed])
            raise ConfigError(
                f"{where}: {value!r} is not a valid value; expected one of "
                f"{', '.join(repr(a) for a in allowed)}.{close}"
            )
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if origin is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of keys, got {value!r}")
        return from_dict(tp, value, prefix=where + ".")  # type: ignore[arg-type]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {_type_name(tp)}")


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking every key and value."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(
                f"unknown config key {prefix + str(key)!r}.{_closest(str(key), names)} "
                f"Valid keys here: {', '.join(prefix + n for n in names)}"
            )
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts (for YAML)."""
    return dataclasses.asdict(cfg)


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a nested dict."""
    out = data
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} is not of the form key=value (e.g. train.episodes=2000)"
            )
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        nested: Any = value
        for part in reversed(key.strip().split(".")):
            nested = {part: nested}
        out = _deep_merge(out, nested)
    return out


def _defaults() -> dict[str, Any]:
    return to_dict(RunConfig())


def load_config(
    source: str | Path | Mapping[str, Any], overrides: list[str] | None = None
) -> RunConfig:
    """Read a recipe (path or mapping), apply overrides, and validate it into a RunConfig.

    Keys absent from the recipe keep their defaults; the result is complete, so saving
    ``to_dict(cfg)`` records every value the run used.
    """
    if isinstance(source, Mapping):
        raw: Any = dict(source)
    else:
        path = Path(source)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{path}: a recipe must be a mapping of keys, got {type(raw).__name__}"
            )
    # Validate the recipe's own keys first so errors point at the user's text.
    from_dict(RunConfig, raw)
    merged = _deep_merge(_defaults(), raw)
    if overrides:
        merged = apply_overrides(merged, overrides)
    return from_dict(RunConfig, merged)
