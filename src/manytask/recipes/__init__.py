"""Shipped recipes: YAML run configs named ``family/name`` (``omniglot/protonet-5w1s``)."""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

__all__ = ["list_recipes", "recipe_path", "resolve_recipe"]


def _root() -> Path:
    return Path(str(resources.files("manytask.recipes")))


def list_recipes() -> list[str]:
    """Names of every shipped recipe, sorted."""
    root = _root()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def recipe_path(name: str) -> Path:
    """The YAML file of shipped recipe ``name``; an unknown name lists the closest ones."""
    path = _root() / f"{name}.yaml"
    if path.is_file():
        return path
    names = list_recipes()
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise FileNotFoundError(
        f"no recipe named {name!r}.{hint} Shipped recipes: {', '.join(names)} "
        "(or pass the path of a YAML file)"
    )


def resolve_recipe(name_or_path: str) -> Path:
    """A path to an existing YAML file, or the shipped recipe of that name."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if p.is_dir() and (p / "config.yaml").is_file():
            raise FileNotFoundError(
                f"{p} is a run folder, not a recipe: to continue it, "
                f"manytask run --resume {p}; to run its recipe again, "
                f"manytask run {p / 'config.yaml'}"
            )
        if not p.is_file():
            raise FileNotFoundError(f"recipe file {p} does not exist")
        return p
    return recipe_path(name_or_path)
