"""Registries: learners, encoders and run families found by name, with typed arguments.

A recipe names a part and gives its arguments::

    model:
      learner: protonet
      args: {}
      encoder: conv4
      encoder_args: {hidden: 64}

The arguments are checked against the constructor's signature and type hints when the config
is loaded (so ``manytask validate`` catches ``args.inner_lrr`` or ``args.steps: many`` before
any data is read). Constructor parameters that the run itself supplies (the encoder module, the
number of ways, the input shape, ...) are *injected*: a recipe may not set them.

Adding a part is one new file plus one line at the bottom of this module. Entries are import
strings (``"module:attribute"``), imported only when used.

Example:
    >>> LEARNERS.get("protonet").__name__
    'ProtoNet'
    >>> LEARNERS.get("protonett")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    manytask.typed.ConfigError: model.learner: unknown learner 'protonett'. Did you mean ...
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from manytask.typed import ConfigError, closest, coerce, type_name

__all__ = ["ENCODERS", "FAMILIES", "LEARNERS", "MTL_METHODS", "TASKS", "Argument", "Registry"]


@dataclass(frozen=True)
class Argument:
    """One constructor parameter of a registered part."""

    name: str
    annotation: Any
    default: Any  # inspect.Parameter.empty when required

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    def describe(self) -> str:
        default = "required" if self.required else f"default {self.default!r}"
        return f"{self.name} ({type_name(self.annotation)}, {default})"


class Registry:
    """Named parts of one kind (``"learner"``, ``"encoder"``, ...).

    Args:
        kind: what the entries are, for messages.
        key: the config key that names an entry (e.g. ``"model.learner"``), for messages.
    """

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        self._entries: dict[str, str | type] = {}

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def add(self, name: str, target: str | type, *, replace: bool = False) -> None:
        """Register ``target`` (a class or ``"module:attribute"``) under ``name``."""
        if name in self._entries and not replace:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self._entries[name] = target

    def remove(self, name: str) -> None:
        """Forget ``name`` (tests register temporary parts)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def get(self, name: str) -> Any:
        """The class registered as ``name``; an unknown name lists the valid ones."""
        if name not in self._entries:
            raise ConfigError(
                f"{self.key}: unknown {self.kind} {name!r}.{closest(name, self.names())} "
                f"Valid: {', '.join(self.names())}"
            )
        target = self._entries[name]
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            target = getattr(importlib.import_module(module), attr)
            self._entries[name] = target
        return target

    def arguments(self, name: str) -> list[Argument]:
        """The constructor parameters of ``name`` with their type hints and defaults."""
        cls = self.get(name)
        init = cls.__init__ if inspect.isclass(cls) else cls
        hints = typing.get_type_hints(init, include_extras=True)
        out = []
        for p in inspect.signature(cls).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out.append(Argument(p.name, hints.get(p.name, Any), p.default))
        return out

    def check_args(
        self,
        name: str,
        args: Mapping[str, Any],
        *,
        injected: Collection[str],
        where: str,
    ) -> dict[str, Any]:
        """Check ``args`` against the constructor of ``name``; return every argument typed.

        Args:
            name: the registered part.
            args: the user's arguments (from a recipe).
            injected: parameters the run supplies; a recipe may not set them.
            where: the config key of ``args`` (e.g. ``"model.args"``), for messages.

        Returns:
            All non-injected arguments, the given ones coerced to their types and the rest at
            their defaults, so the resolved config records every value the run used.

        Raises:
            ConfigError: an unknown or injected key, a value of the wrong type or range, or a
                missing required argument.
        """
        params = {a.name: a for a in self.arguments(name)}
        settable = [n for n in params if n not in injected]
        out: dict[str, Any] = {}
        for key, value in args.items():
            if key in injected and key in params:
                raise ConfigError(
                    f"{where}.{key}: {key!r} of {self.kind} {name!r} is set by the run "
                    "(from the data and the episode shape); remove it from the recipe"
                )
            if key not in params:
                valid = ", ".join(params[n].describe() for n in settable) or "none"
                raise ConfigError(
                    f"unknown argument {where}.{key} for {self.kind} {name!r}."
                    f"{closest(key, settable)} Valid arguments: {valid}"
                )
            out[key] = coerce(value, params[key].annotation, f"{where}.{key}")
        for n in settable:
            if n in out:
                continue
            if params[n].required:
                raise ConfigError(
                    f"{where}.{n}: {self.kind} {name!r} needs argument {params[n].describe()}"
                )
            out[n] = params[n].default
        return out

    def takes(self, name: str, parameter: str) -> bool:
        """Whether the constructor of ``name`` has a parameter called ``parameter``."""
        return any(a.name == parameter for a in self.arguments(name))


LEARNERS = Registry("learner", "model.learner")
"""Meta-learners: ``learner(support_x, support_y, query_x, ways=None) -> predictions``."""

ENCODERS = Registry("encoder", "model.encoder")
"""Backbones: ``encoder(x [B, *in_shape]) -> [B, D]``."""

TASKS = Registry("task source", "data.dataset")
"""Meta-learning task sources: ``sampler(...)`` and ``fixed(...)`` episodes of a data set."""

FAMILIES = Registry("problem family", "family")
"""Run families: a config dataclass whose ``trainer`` names the module that trains it."""

MTL_METHODS = Registry("multi-task method", "method.name")
"""Multi-task update methods (:class:`manytask.mtl.base.MTLMethod`): losses -> ``.grad``."""

# --- the registry lines ----------------------------------------------------------------------
LEARNERS.add("protonet", "manytask.meta.protonet:ProtoNet")
LEARNERS.add("mann", "manytask.meta.mann:MANN")
LEARNERS.add("matchingnet", "manytask.meta.matching:MatchingNet")
LEARNERS.add("relationnet", "manytask.meta.relation:RelationNet")
LEARNERS.add("cnp", "manytask.meta.cnp:CNP")
LEARNERS.add("snail", "manytask.meta.snail:SNAIL")

ENCODERS.add("conv4", "manytask.nn.conv4:Conv4")
ENCODERS.add("mlp", "manytask.nn.backbones:MLP")
ENCODERS.add("flatten", "manytask.nn.mlp:Flatten")

TASKS.add("omniglot", "manytask.data.omniglot_tasks:OmniglotTasks")
TASKS.add("sinusoid", "manytask.data.sinusoid:SinusoidTasks")
TASKS.add("omniglot_sequences", "manytask.data.omniglot_sequences:OmniglotSequences")

FAMILIES.add("meta", "manytask.config.meta:MetaConfig")
FAMILIES.add("mtl", "manytask.config.mtl:MTLConfig")

MTL_METHODS.add("fixed", "manytask.mtl.fixed:FixedWeights")
MTL_METHODS.add("minmax", "manytask.mtl.minmax:MinMax")

# Gradient aggregators (per-task gradients -> one direction) and loss weightings (issue 9).
MTL_METHODS.add("mean", "manytask.mtl.gradient_methods:MeanMethod")
MTL_METHODS.add("mgda", "manytask.mtl.gradient_methods:MGDAMethod")
MTL_METHODS.add("mgda_ub", "manytask.mtl.gradient_methods:MGDAUBMethod")
MTL_METHODS.add("pcgrad", "manytask.mtl.gradient_methods:PCGradMethod")
MTL_METHODS.add("graddrop", "manytask.mtl.gradient_methods:GradDropMethod")
MTL_METHODS.add("cagrad", "manytask.mtl.gradient_methods:CAGradMethod")
MTL_METHODS.add("gradvac", "manytask.mtl.gradient_methods:GradVacMethod")
MTL_METHODS.add("imtl_g", "manytask.mtl.gradient_methods:IMTLGMethod")
MTL_METHODS.add("nash_mtl", "manytask.mtl.gradient_methods:NashMTLMethod")
MTL_METHODS.add("aligned_mtl", "manytask.mtl.gradient_methods:AlignedMTLMethod")
MTL_METHODS.add("upgrad", "manytask.mtl.gradient_methods:UPGradMethod")
MTL_METHODS.add("uncertainty", "manytask.mtl.weightings.uncertainty:UncertaintyWeighting")
MTL_METHODS.add("gradnorm", "manytask.mtl.weightings.gradnorm:GradNorm")
MTL_METHODS.add("dwa", "manytask.mtl.weightings.dwa:DWA")
MTL_METHODS.add("rlw", "manytask.mtl.weightings.rlw:RLW")
MTL_METHODS.add("famo", "manytask.mtl.weightings.famo:FAMO")
