"""Every data set by name: how to load it, which files it needs, how to fetch and verify them.

``manytask data list|fetch|verify [DATASET]`` and the multi-task config find data sets here.
Adding one is a module with a ``load_<name>(data_dir=None, *, seed=0, ...) -> MultiTaskData``
function (and a :class:`~manytask.data.sources.FileSet` if it needs files) plus one entry in
:data:`DATASETS`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from manytask.data import census, mnist, mulan, multimnist, omniglot, omniglot_alphabets, synthetic
from manytask.data.multitask import MultiTaskData
from manytask.data.sources import FileSet
from manytask.typed import ManytaskError

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "UnknownDatasetError",
    "fetch_dataset",
    "get_dataset",
    "list_datasets",
    "load_dataset",
    "verify_dataset",
]

Report = dict[str, dict[str, Any]]


class UnknownDatasetError(ManytaskError, ValueError):
    """A data-set name that is not registered (or not a multi-task set where one is needed)."""


@dataclass(frozen=True)
class DatasetInfo:
    """A registered data set.

    Attributes:
        name: registry name (``manytask data fetch <name>``, the multi-task config).
        summary: one line for ``manytask data list``.
        load: ``load(data_dir=None, *, seed=0, ...) -> MultiTaskData``; None for a data set
            that is not a multi-task problem by itself (Omniglot's image store, used by the
            meta-learning recipes).
        files: the source files, or None when nothing needs fetching (generated data, or data
            built from the store shipped in the package).
        fetch_fn: overrides ``files.fetch`` (Omniglot keeps its own mirror rules).
        verify_fn: overrides ``files.verify``.

    Example:
        >>> info = get_dataset("census_income")
        >>> info.files.folder, info.needs_files
        ('uci_census_income_kdd', True)
    """

    name: str
    summary: str
    load: Callable[..., MultiTaskData] | None
    files: FileSet | None = None
    fetch_fn: Callable[..., list[Path]] | None = None
    verify_fn: Callable[..., Report] | None = None

    @property
    def needs_files(self) -> bool:
        return self.files is not None or self.fetch_fn is not None

    def __repr__(self) -> str:
        return f"DatasetInfo({self.name!r}, files={self.files.folder if self.files else None})"


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo(
            "omniglot",
            "Omniglot image store (meta-learning): 1623 characters x 20 drawers",
            None,
            fetch_fn=omniglot.fetch_omniglot,
            verify_fn=omniglot.verify_omniglot,
        ),
        DatasetInfo(
            "omniglot_alphabets",
            "Omniglot by alphabet: 50 tasks, each classifying its own characters (embedded)",
            omniglot_alphabets.load_omniglot_alphabets,
        ),
        DatasetInfo(
            "mnist", "MNIST digits, one 10-way task (baseline)", mnist.load_mnist, mnist.MNIST_FILES
        ),
        DatasetInfo(
            "fashion_mnist",
            "Fashion-MNIST articles, one 10-way task (baseline)",
            mnist.load_fashion_mnist,
            mnist.FASHION_MNIST_FILES,
        ),
        DatasetInfo(
            "multi_mnist",
            "MultiMNIST (Sener & Koltun 2018): left and right digit, 2 tasks, shared inputs",
            multimnist.load_multi_mnist,
            mnist.MNIST_FILES,
        ),
        DatasetInfo(
            "multi_fashion",
            "MultiFashion: left and right Fashion-MNIST article, 2 tasks, shared inputs",
            multimnist.load_multi_fashion,
            mnist.FASHION_MNIST_FILES,
        ),
        DatasetInfo(
            "yeast",
            "MULAN yeast: 14 gene-function labels, each a binary task (multi-label)",
            mulan.load_yeast,
            mulan.MULAN_FILES["yeast"],
        ),
        DatasetInfo(
            "scene",
            "MULAN scene: 6 scene labels, each a binary task (multi-label)",
            mulan.load_scene,
            mulan.MULAN_FILES["scene"],
        ),
        DatasetInfo(
            "emotions",
            "MULAN emotions: 6 music emotion labels, each a binary task (multi-label)",
            mulan.load_emotions,
            mulan.MULAN_FILES["emotions"],
        ),
        DatasetInfo(
            "census_income",
            "UCI Census-Income (KDD), MMoE setting: income, never married (+ age regression)",
            census.load_census_income,
            census.CENSUS_FILES,
        ),
        DatasetInfo(
            "mmoe_synthetic",
            "MMoE synthetic regression pair with label correlation set by p (generated)",
            synthetic.load_mmoe_synthetic,
        ),
    )
}
"""Every data set by name."""


def list_datasets() -> tuple[str, ...]:
    """Registered names, in registry order."""
    return tuple(DATASETS)


def get_dataset(name: str) -> DatasetInfo:
    """The entry called ``name``; an unknown name lists the valid ones and the closest.

    Example:
        >>> get_dataset("multi_mnist").name
        'multi_mnist'
    """
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), DATASETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownDatasetError(
            f"unknown data set {name!r}; known: {', '.join(DATASETS)}.{hint}"
        ) from None


def load_dataset(
    name: str, data_dir: str | os.PathLike[str] | None = None, **kwargs: Any
) -> MultiTaskData:
    """``get_dataset(name).load(data_dir, **kwargs)`` for multi-task data sets."""
    info = get_dataset(name)
    if info.load is None:
        multi = [n for n, d in DATASETS.items() if d.load is not None]
        raise UnknownDatasetError(
            f"{name!r} is not a multi-task data set; those are: {', '.join(multi)}"
        )
    return info.load(data_dir, **kwargs)


def fetch_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    base_url: str | None = None,
    progress: bool = True,
) -> list[Path]:
    """Download and verify the files of ``name`` into the data directory (nothing if none)."""
    info = get_dataset(name)
    if info.fetch_fn is not None:
        return info.fetch_fn(data_dir, base_url=base_url, progress=progress)
    if info.files is None:
        return []
    return info.files.fetch(data_dir, base_url=base_url, progress=progress)


def verify_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> Report:
    """``{file: {"status": "ok" | "missing" | "invalid", "path", "message"}}``; never raises."""
    info = get_dataset(name)
    if info.verify_fn is not None:
        return info.verify_fn(data_dir)
    if info.files is None:
        return {}
    return info.files.verify(data_dir)
