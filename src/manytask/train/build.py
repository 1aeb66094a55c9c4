"""Turn names and typed arguments into the objects a run needs.

These functions are the bridge from a config to the library: learners and modules take typed
arguments and never see a config object.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from manytask.nn import global_rng_untouched, init_parameters
from manytask.registry import ENCODERS, LEARNERS
from manytask.typed import ConfigError

__all__ = ["build_encoder", "build_learner", "build_optimizer", "build_scheduler"]

_LEARNER_INJECTED = ("encoder", "ways", "in_shape", "out_features")
_ENCODER_INJECTED = ("in_shape", "in_channels", "in_features")


def build_encoder(name: str, args: Mapping[str, Any], *, in_shape: Sequence[int]) -> nn.Module:
    """The encoder ``name`` with typed ``args`` for inputs of ``in_shape``.

    Example:
        >>> build_encoder("conv4", {"hidden": 8}, in_shape=(1, 28, 28))
        Conv4(
          in_channels=1, hidden=8
          ...
    """
    typed = ENCODERS.check_args(name, args, injected=_ENCODER_INJECTED, where="model.encoder_args")
    shape = tuple(int(s) for s in in_shape)
    supplied = {"in_shape": shape, "in_channels": shape[0], "in_features": math.prod(shape)}
    for key in _ENCODER_INJECTED:
        if ENCODERS.takes(name, key):
            typed[key] = supplied[key]
    try:
        module: nn.Module = ENCODERS.get(name)(**typed)
    except ValueError as exc:  # a constructor's check of its arguments: a user error
        raise ConfigError(f"model.encoder_args: encoder {name!r}: {exc}") from exc
    return module


def build_learner(
    learner: str,
    args: Mapping[str, Any] | None = None,
    encoder: str | None = "conv4",
    encoder_args: Mapping[str, Any] | None = None,
    *,
    in_shape: Sequence[int],
    ways: int | None = None,
    out_features: int | None = None,
    seed: int = 0,
) -> Any:
    """The meta-learner ``learner`` with its encoder, every parameter drawn from ``seed``.

    Args:
        learner: a name in :data:`manytask.registry.LEARNERS`.
        args: the learner's typed arguments (checked against its constructor).
        encoder: a name in :data:`manytask.registry.ENCODERS` for learners that take one.
        encoder_args: the encoder's typed arguments.
        in_shape: the per-example input shape (e.g. ``(1, 28, 28)``).
        ways: the number of classes at training (for learners with a fixed output size).
        out_features: the target width of regression problems.
        seed: the seed of :func:`manytask.nn.init_parameters`.

    Example:
        >>> net = build_learner("protonet", {}, "conv4", {"hidden": 8}, in_shape=(1, 28, 28))
        >>> type(net).__name__
        'ProtoNet'
    """
    with global_rng_untouched():  # layer constructors draw from the global generator
        return _build_learner(
            learner, args, encoder, encoder_args, in_shape, ways, out_features, seed
        )


def _build_learner(
    learner: str,
    args: Mapping[str, Any] | None,
    encoder: str | None,
    encoder_args: Mapping[str, Any] | None,
    in_shape: Sequence[int],
    ways: int | None,
    out_features: int | None,
    seed: int,
) -> Any:
    typed = LEARNERS.check_args(learner, args or {}, injected=_LEARNER_INJECTED, where="model.args")
    supplied: dict[str, Any] = {
        "in_shape": tuple(int(s) for s in in_shape),
        "ways": ways,
        "out_features": out_features,
    }
    if LEARNERS.takes(learner, "encoder"):
        if encoder is None:
            raise ConfigError(f"model.encoder: learner {learner!r} needs an encoder")
        supplied["encoder"] = build_encoder(encoder, encoder_args or {}, in_shape=in_shape)
    for arg in LEARNERS.arguments(learner):
        if arg.name not in supplied:
            continue
        if supplied[arg.name] is not None:
            typed[arg.name] = supplied[arg.name]
        elif arg.required:
            raise ConfigError(
                f"learner {learner!r} needs {arg.name!r}, which this problem does not have"
            )
    try:
        module = LEARNERS.get(learner)(**typed)
    except ValueError as exc:  # a constructor's check of its arguments: a user error
        raise ConfigError(f"model.args: learner {learner!r}: {exc}") from exc
    return init_parameters(module, seed)


def build_optimizer(params: Any, optim: Any) -> torch.optim.Optimizer:
    """Adam or SGD over ``params`` from an :class:`~manytask.config.meta.OptimConfig`."""
    if optim.optimizer == "adam":
        return torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay)
    return torch.optim.SGD(
        params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay
    )


def build_scheduler(opt: torch.optim.Optimizer, optim: Any, total: int) -> Any:
    """The learning-rate schedule of ``optim`` over ``total`` steps (stepped once per step).

    ``step`` without warm-up is a plain ``StepLR``; the rest is a ``LambdaLR`` of the factor
    ``warmup ramp x (step decay | cosine | 1)``.
    """
    if optim.schedule == "step" and optim.warmup == 0:
        return torch.optim.lr_scheduler.StepLR(opt, step_size=optim.step_size, gamma=optim.gamma)
    warmup, floor = optim.warmup, optim.min_lr_ratio

    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        if optim.schedule == "step":
            return ramp * optim.gamma ** (step // optim.step_size)
        if optim.schedule == "cosine":
            t = min(1.0, max(0, step - warmup) / max(1, total - warmup))
            return ramp * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t)))
        return ramp

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
