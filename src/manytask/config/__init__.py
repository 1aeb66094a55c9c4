"""Typed run configurations, one family of dataclasses per kind of problem.

A recipe (YAML) plus ``key=value`` overrides becomes the typed config of its *family*, named
by the recipe's ``family:`` key (``meta`` for meta-learning; the families are listed in
:data:`manytask.registry.FAMILIES`). Each family is a dataclass module of its own
(:mod:`manytask.config.meta`) with a ``check()`` method for the rules that span several keys
(learner arguments against the learner's signature, the number of ways, batch sizes), and a
``trainer`` module that trains it. A new family is a new module plus one registry line; no
existing family is touched.

Every key is checked: an unknown key is an error naming it, the closest valid key and every
valid key; a value of the wrong type or out of range names the key, what was expected and
what was found. Numbers may be written ``1e-3``, ``1E-3``, ``.001`` or ``2e4`` (an integer
field accepts a float that is exactly an integer).

Saved runs outlive the code: ``config.yaml`` records ``schema``, the version of this layout.
A config without it was written by manytask 0.1.0 (schema 1) and is migrated on load; a
config from a newer schema is refused with a message that says so.

Example:
    >>> cfg = load_config({"family": "meta", "train": {"episode": {"ways": 20}}},
    ...                   ["train.optim.lr=1e-3", "train.episodes=2e4",
    ...                    "eval.episode.ways=5"])
    >>> cfg.train.optim.lr, cfg.train.episodes, type(cfg).__name__
    (0.001, 20000, 'MetaConfig')
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from manytask.typed import ConfigError, closest, dump_yaml, from_dict, load_yaml

__all__ = [
    "SCHEMA",
    "ConfigError",
    "apply_overrides",
    "from_dict",
    "load_config",
    "migrate",
    "read_recipe",
    "to_dict",
]

SCHEMA = 2
"""The version of the config layout written into every ``config.yaml``."""


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts, lists and scalars (for YAML)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(cfg))


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def apply_overrides(data: Mapping[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML 1.2) to a nested dict."""
    out = dict(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"override {item!r} is not of the form key=value (e.g. train.episodes=2000)"
            )
        try:
            value = load_yaml(raw) if raw != "" else ""
        except Exception as exc:  # yaml.YAMLError and friends
            raise ConfigError(f"override {item!r}: the value is not valid YAML: {exc}") from None
        nested: Any = value
        for part in reversed(key.strip().split(".")):
            nested = {part: nested}
        out = _deep_merge(out, nested)
    return out


def read_recipe(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML recipe file (numbers read as YAML 1.2)."""
    path = Path(path)
    try:
        raw = load_yaml(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the recipe: {exc.strerror}") from None
    except Exception as exc:  # yaml.YAMLError
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    raw = raw if raw is not None else {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys, got {type(raw).__name__}")
    return raw


def migrate(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Bring a config written by an older manytask to the current :data:`SCHEMA`.

    Schema 1 (manytask 0.1.0, no ``schema`` key): ProtoNets only, with the encoder width at
    ``model.hidden`` and a ``tasks`` key in ``eval.episode``.

    Raises:
        ConfigError: the config comes from a newer manytask than this one.
    """
    data = copy.deepcopy(dict(raw))
    schema = data.get("schema", 1)
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        raise ConfigError(f"schema: expected a positive integer, got {schema!r}")
    if schema > SCHEMA:
        raise ConfigError(
            f"this config was written by a newer manytask (config schema {schema}; this "
            f"version reads schemas 1 to {SCHEMA}). Upgrade manytask (pip install -U manytask) "
            "to use it."
        )
    if schema == 1:
        data.setdefault("family", "meta")
        model = data.get("model")
        if isinstance(model, dict) and "hidden" in model:
            model = dict(model)
            model.setdefault("encoder_args", {})["hidden"] = model.pop("hidden")
            data["model"] = model
        ev = data.get("eval")
        if isinstance(ev, dict) and isinstance(ev.get("episode"), dict):
            ev = dict(ev)
            ev["episode"] = {k: v for k, v in ev["episode"].items() if k != "tasks"}
            data["eval"] = ev
        data["schema"] = SCHEMA
    return data


def family_class(raw: Mapping[str, Any]) -> Any:
    """The config dataclass of the family a raw config names (``family:``, default ``meta``)."""
    from manytask.registry import FAMILIES

    name = raw.get("family", "meta")
    if not isinstance(name, str) or name not in FAMILIES:
        valid = FAMILIES.names()
        raise ConfigError(
            f"family: {name!r} is not a problem family.{closest(str(name), valid)} "
            f"Valid: {', '.join(valid)}"
        )
    return FAMILIES.get(name)


def load_config(source: str | Path | Mapping[str, Any], overrides: list[str] | None = None) -> Any:
    """Read a recipe (path or mapping), apply overrides, and check it into its family's config.

    Keys absent from the recipe keep their defaults, and registered parts get every argument
    filled in, so saving :func:`to_dict` of the result records every value the run used.

    Raises:
        ConfigError: naming the bad key or value and how to fix it.
    """
    raw = dict(source) if isinstance(source, Mapping) else read_recipe(source)
    raw = migrate(raw)
    cls = family_class(raw)
    # Check the recipe's own keys first, so errors point at the user's text, then overrides.
    cfg = from_dict(cls, raw)
    if overrides:
        raw = apply_overrides(raw, overrides)
        cls = family_class(raw)
        cfg = from_dict(cls, raw)
    cfg.check()
    return cfg


def dump_config(cfg: Any) -> str:
    """The YAML text of a config (as saved to ``config.yaml``)."""
    return dump_yaml(to_dict(cfg))
