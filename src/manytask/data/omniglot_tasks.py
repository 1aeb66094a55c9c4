"""Omniglot as a task source for meta-learning runs: N-way K-shot episodes of one split.

A task source turns a recipe's ``data:`` section into samplers and fixed evaluation tasks.
Building one reads nothing; the store is loaded (from the embedded copy or the archives) the
first time episodes are asked for, and kept.

Example:
    >>> tasks = OmniglotTasks(source="embedded", rotations=(0,))
    >>> tasks.problem, tasks.in_shape
    ('classification', (1, 28, 28))
    >>> ep = tasks.sampler("train", ways=5, shots=1, queries=2, tasks=3, seed=0).sample()
    >>> tuple(ep.support_x.shape), tasks.classes("test")
    ((3, 5, 1, 28, 28), 423)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import torch

from manytask.data.episodes import EpisodeSampler, FixedEpisodes
from manytask.data.omniglot import _SPLIT_PARTS, load_omniglot, omniglot_split
from manytask.data.store import ImageStore

__all__ = ["OmniglotTasks"]

Part = Literal["train", "val", "test"]


class OmniglotTasks:
    """Episodes from one Omniglot split, with rotations as new classes.

    Args:
        image_size: image side (28 ships with the package; others need the archives).
        source: ``"auto"``, ``"archives"`` or ``"embedded"`` (see
            :func:`manytask.data.load_omniglot`).
        split: ``"vinyals"``, ``"lake"``, ``"small1"`` or ``"small2"``.
        train_part: the split part that meta-training draws from.
        val_part: the part of validation episodes.
        test_part: the part of meta-test episodes.
        rotations: angles (multiples of 90) that make new classes.
        group_by: ``"alphabet"`` draws each task's classes within one alphabet.
        data_dir: the data directory (the run passes it; ``None`` = the default rules).
        cache_dir: where decoded stores are cached.
        progress: show progress while decoding archives.
    """

    problem = "classification"
    out_features = None

    def __init__(
        self,
        image_size: int = 28,
        source: Literal["auto", "archives", "embedded"] = "auto",
        split: Literal["vinyals", "lake", "small1", "small2"] = "vinyals",
        train_part: str = "train",
        val_part: str = "val",
        test_part: str = "test",
        rotations: Sequence[int] = (0, 90, 180, 270),
        group_by: Literal["none", "alphabet"] = "none",
        data_dir: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
    ) -> None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
            raise ValueError(
                f"image_size must be an int >= 16 (Conv4 needs it), got {image_size!r}"
            )
        for key, part in (
            ("train_part", train_part),
            ("val_part", val_part),
            ("test_part", test_part),
        ):
            if part not in _SPLIT_PARTS[split]:
                raise ValueError(
                    f"{key}={part!r} is not a part of split {split!r}; valid: "
                    f"{', '.join(_SPLIT_PARTS[split])}"
                )
        self.image_size, self.source, self.split = image_size, source, split
        self.parts = {"train": train_part, "val": val_part, "test": test_part}
        self.rotations = tuple(rotations)
        self.group_by: Literal["none", "alphabet"] = group_by
        self.data_dir, self.cache_dir, self.progress = data_dir, cache_dir, progress
        self._stores: dict[str, ImageStore] = {}

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Per-example input shape ``(1, image_size, image_size)``."""
        return (1, self.image_size, self.image_size)

    def __repr__(self) -> str:
        return (
            f"OmniglotTasks(image_size={self.image_size}, source={self.source!r}, "
            f"split={self.split!r}, parts={self.parts}, rotations={self.rotations}, "
            f"group_by={self.group_by!r})"
        )

    def store(self, part: Part) -> ImageStore:
        """The classes of ``part`` (loads the data set on first use)."""
        if not self._stores:
            full = load_omniglot(
                self.image_size,
                data_dir=self.data_dir,
                cache_dir=self.cache_dir,
                source=self.source,
                progress=self.progress,
            )
            for name, p in self.parts.items():
                self._stores[name] = omniglot_split(full, self.split, p)
        return self._stores[part]

    def describe(self, part: Part) -> str:
        """``"vinyals/test"``: where a part's tasks come from (for results)."""
        return f"{self.split}/{self.parts[part]}"

    def classes(self, part: Part) -> int:
        """Classes available in ``part``, rotations counted."""
        return len(self.store(part)) * len(self.rotations)

    def sampler(
        self,
        part: Part,
        ways: int,
        shots: int,
        queries: int,
        tasks: int,
        *,
        seed: int,
        device: torch.device | str | None = None,
    ) -> EpisodeSampler:
        """An endless, resumable stream of meta-batches from ``part``."""
        return EpisodeSampler(
            self.store(part),
            ways,
            shots,
            queries,
            tasks,
            rotations=self.rotations,
            group_by=self.group_by,
            device=device,
            seed=seed,
        )

    def fixed(
        self,
        part: Part,
        ways: int,
        shots: int,
        queries: int,
        episodes: int,
        *,
        seed: int,
        batch_size: int,
        device: torch.device | str | None = None,
    ) -> FixedEpisodes:
        """``episodes`` fixed, seeded tasks from ``part``, delivered ``batch_size`` at a time."""
        return FixedEpisodes(
            self.store(part),
            ways,
            shots,
            queries,
            episodes,
            seed=seed,
            rotations=self.rotations,
            batch_size=batch_size,
            group_by=self.group_by,
            device=device,
        )
