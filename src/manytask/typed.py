"""Typed values from YAML: coercion against type hints, range checks and YAML 1.2 numbers.

One checker serves the run configs (dataclasses) and the typed arguments of learners,
encoders and other registered parts (constructor signatures). Every error names the key, what
was expected, what was found and, for an unknown key, the closest valid one and the full list.

Numbers: YAML 1.1 (PyYAML's default) reads ``1e-3`` and ``.5e2`` as strings; :func:`load_yaml`
uses YAML 1.2's float syntax instead, so ``1e-3``, ``1E-3``, ``.001`` and ``2e4`` are numbers,
and an integer field accepts a float that is exactly an integer (``2e4`` -> ``20000``).

Ranges are declared with ``Annotated``:

    >>> from typing import Annotated
    >>> coerce(3, Annotated[int, Range(min=1)], "train.episodes")
    3
    >>> coerce(0, Annotated[int, Range(min=1)], "train.log_every")
    Traceback (most recent call last):
        ...
    manytask.typed.ConfigError: train.log_every: 0 is out of range; expected an integer >= 1
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml

__all__ = [
    "ConfigError",
    "ManytaskError",
    "NonNegativeInt",
    "PositiveFloat",
    "PositiveInt",
    "Range",
    "closest",
    "coerce",
    "dump_yaml",
    "from_dict",
    "load_yaml",
    "type_name",
]


class ManytaskError(Exception):
    """An error in what the user asked for (config, data, request); shown as one line.

    The command line prints these without a traceback; anything else is a bug and keeps its
    traceback.
    """


class ConfigError(ManytaskError, ValueError):
    """A configuration key or value is not valid; the message says which and how to fix it."""


@dataclass(frozen=True)
class Range:
    """A numeric bound for ``Annotated[int | float, Range(...)]``; ``open`` excludes ``min``."""

    min: float | None = None
    max: float | None = None
    open: bool = False

    def describe(self, kind: str) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"{'>' if self.open else '>='} {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        return f"{kind} " + " and ".join(parts)

    def check(self, value: float) -> bool:
        if self.min is not None and (value <= self.min if self.open else value < self.min):
            return False
        return not (self.max is not None and value > self.max)


PositiveInt = Annotated[int, Range(min=1)]
NonNegativeInt = Annotated[int, Range(min=0)]
PositiveFloat = Annotated[float, Range(min=0, open=True)]


# --- YAML with YAML 1.2 floats ---------------------------------------------------------------

_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
        |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 float resolution (``1e-3`` is a float)."""


# Replace the YAML 1.1 float resolver (which needs a dot and a signed exponent).
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """Parse YAML text safely, reading ``1e-3``-style numbers as floats.

    >>> load_yaml("lr: 1e-3\\nsteps: 2e4\\nname: 1e3x")
    {'lr': 0.001, 'steps': 20000.0, 'name': '1e3x'}
    """
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects


def dump_yaml(data: Any) -> str:
    """YAML text for plain data (keys kept in order)."""
    return yaml.safe_dump(data, sort_keys=False)


# --- coercion -------------------------------------------------------------------------------


def closest(key: str, valid: Sequence[str]) -> str:
    """``" Did you mean 'x'?"`` for the closest valid key, or ``""``."""
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" Did you mean {match[0]!r}?" if match else ""


def type_name(tp: Any) -> str:
    """A readable name for a type hint (for error messages)."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        ranges = [m for m in meta if isinstance(m, Range)]
        return ranges[0].describe(type_name(base)) if ranges else type_name(base)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in get_args(tp))
    if origin in (list, tuple, Sequence):
        return f"a list of {type_name(get_args(tp)[0])}" if get_args(tp) else "a list"
    if origin in (dict, Mapping):
        return "a mapping"
    if tp is type(None):
        return "null"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    return getattr(tp, "__name__", str(tp))


def _number(value: Any) -> float | None:
    """``value`` as a number if it is one (numeric strings included), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return int(value) if re.fullmatch(r"[-+]?[0-9]+", value.strip()) else float(value)
        except ValueError:
            return None
    return None


def _discriminator(cls: type) -> tuple[str, tuple[Any, ...]] | None:
    """The ``Literal`` field that tells dataclasses of a union apart (e.g. ``dataset``)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        if get_origin(hints[f.name]) is Literal:
            return f.name, get_args(hints[f.name])
    return None


def _coerce_union(value: Any, options: list[Any], where: str) -> Any:
    classes: list[Any] = [o for o in options if dataclasses.is_dataclass(o)]
    if classes and isinstance(value, Mapping):
        # A tagged union of dataclasses: the discriminator field picks the class.
        tags: dict[Any, Any] = {}
        key, default = None, None
        for cls in reversed(classes):  # the first class's default tag wins
            disc = _discriminator(cls)
            if disc is None:
                continue
            key = disc[0]
            default = next(f.default for f in dataclasses.fields(cls) if f.name == key)
            for tag in disc[1]:
                tags[tag] = cls
        if key is not None and tags:
            tag = value.get(key, default)
            if tag not in tags:
                names = [str(t) for t in tags]
                raise ConfigError(
                    f"{where}.{key}: {tag!r} is not valid; expected one of "
                    f"{', '.join(repr(t) for t in tags)}.{closest(str(tag), names)}"
                )
            return from_dict(tags[tag], value, prefix=where + ".")
    if len(options) == 1:  # Optional[X]: X's own message (with its range) is the clearest
        return coerce(value, options[0], where)
    errors = []
    for option in options:
        try:
            return coerce(value, option, where)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(
        f"{where}: expected {' or '.join(type_name(o) for o in options)}, got {value!r}"
    )


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against type hint ``tp`` and return it in that type.

    Supports ``Annotated[..., Range]``, ``Literal``, ``Optional``/unions (a union of
    dataclasses is told apart by its ``Literal`` field), ``list``/``tuple``/``Sequence``,
    ``dict``/``Mapping``, dataclasses, ``bool``, ``int``, ``float``, ``str`` and ``Any``.

    Raises:
        ConfigError: naming ``where``, the expected type and the value found.
    """
    origin = get_origin(tp)
    if tp is Any or tp is inspect.Parameter.empty:
        return value
    if origin is Annotated:
        base, *meta = get_args(tp)
        out = coerce(value, base, where)
        for m in meta:
            if isinstance(m, Range) and not m.check(out):
                raise ConfigError(
                    f"{where}: {out!r} is out of range; expected {m.describe(type_name(base))}"
                )
        return out
    if origin is Literal:
        allowed = get_args(tp)
        if not any(value == a and type(value) is type(a) for a in allowed):
            names = [str(a) for a in allowed]
            raise ConfigError(
                f"{where}: {value!r} is not a valid value; expected one of "
                f"{', '.join(repr(a) for a in allowed)}.{closest(str(value), names)}"
            )
        return value
    if origin in (Union, types.UnionType):
        args = list(get_args(tp))
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{where}: expected {type_name(tp)}, got null")
        return _coerce_union(value, [a for a in args if a is not type(None)], where)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected {type_name(tp)}, got {value!r}")
        items = get_args(tp)
        if origin is tuple and items and items[-1] is not Ellipsis:
            if len(items) != len(value):
                raise ConfigError(
                    f"{where}: expected {len(items)} values, got {len(value)}: {value!r}"
                )
            pairs = enumerate(zip(value, items, strict=True))
            return tuple(coerce(v, t, f"{where}[{i}]") for i, (v, t) in pairs)
        item_tp = items[0] if items else Any
        out = [coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin in (dict, Mapping) or tp in (dict,):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of keys, got {value!r}")
        val_tp = get_args(tp)[1] if get_args(tp) else Any
        return {str(k): coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of keys, got {value!r}")
        return from_dict(tp, value, prefix=where + ".")  # type: ignore[arg-type]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        num = _number(value)
        if num is not None and math.isfinite(num) and float(num).is_integer():
            return int(num)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        num = _number(value)
        if num is not None:
            return float(num)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: cannot be set from a config (type {type_name(tp)})")


T = typing.TypeVar("T")


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking every key and value.

    Keys absent from ``data`` keep the dataclass defaults; an unknown key is an error naming
    it, the closest valid key and every valid key.
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(
                f"unknown config key {prefix + str(key)!r}.{closest(str(key), names)} "
                f"Valid keys here: {', '.join(prefix + n for n in names)}"
            )
        kwargs[key] = coerce(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {exc}") from exc
