"""MULAN multi-label data sets: yeast, scene, emotions; each label is a binary task.

Multi-label learning is the lecture's "same ``x``, different labels" regime: every task of a
split shares the same input tensor (``shared_inputs=True``), so one forward pass serves all
``K`` losses, and the label-set metrics (Hamming loss, micro- and macro-F1, see
:mod:`manytask.metrics`) are computed over the ``[n, K]`` outputs.

Data (the MULAN benchmark versions; Tsoumakas et al., "MULAN: A Java Library for Multi-Label
Learning", JMLR 2011): dense ARFF files, features first and the label attributes last (their
names listed in ``<name>.xml``), with the standard train / test files:

====================  ========  ======  ========  ======  ===========================
data set              train     test    features  labels  label cardinality (tr / te)
====================  ========  ======  ========  ======  ===========================
yeast (Elisseeff &    1,500     917     103       14      4.228 / 4.252
Weston 2001)
scene (Boutell et     1,211     1,196   294       6       1.062 / 1.086
al. 2004)
emotions (Trohidis    391       202     72        6       1.813 / 1.975
et al. 2008)
====================  ========  ======  ========  ======  ===========================

The loader checks every count above (rows, features, labels; cardinality to 2 decimals) and
each file's sha256. The validation split is drawn from the train file: ``val_fraction`` of its
rows (10% by default) by a permutation seeded by ``seed``; the test file is the test split.
Features are used as published (they are already scaled in these files); pass
``standardize=True`` to standardise them with the training split's mean and std.

Downloads: MULAN publishes these sets as RAR archives (``mulan.sourceforge.net``), which the
Python standard library cannot open; the default source is therefore a public copy of the same
plain files pinned to one commit (the source named in the shared data's MANIFEST), checked
by sha256 before anything is kept. ``base_url`` (``--url``) points to another mirror.

The ARFF reader (:func:`read_arff`) handles dense numeric ARFF (``numeric`` / ``real`` /
``integer`` and ``{0,1}`` nominal attributes); sparse rows and missing values are errors.
"""

from __future__ import annotations

import io
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from manytask.data.archives import ArchiveError
from manytask.data.cache import cached_arrays
from manytask.data.multitask import MultiTaskData, TaskData, TaskSpec
from manytask.data.paths import cache_dir as resolve_cache_dir
from manytask.data.sources import FileSet, RemoteFile, source_key

__all__ = ["MULAN_FILES", "load_emotions", "load_mulan", "load_scene", "load_yeast", "read_arff"]

FORMAT_VERSION = 1
FOLDER = "mulan_multilabel"
_MIRROR = "https://raw.githubusercontent.com/li9i/mlaslcs/088ae02c572fae6ef7ea9f1bc274aca2f075da38/datasets"

Name = Literal["yeast", "scene", "emotions"]


@dataclass(frozen=True)
class _Published:
    train: int
    test: int
    features: int
    labels: int
    cardinality: tuple[float, float]
    description: str  # what a label of this set means, for the task descriptions


_PUBLISHED: dict[str, _Published] = {
    "yeast": _Published(
        1500,
        917,
        103,
        14,
        (4.23, 4.25),
        "whether a yeast gene belongs to functional class {label} (one of 14 FunCat classes; "
        "features: microarray expression and phylogenetic profile)",
    ),
    "scene": _Published(
        1211,
        1196,
        294,
        6,
        (1.06, 1.09),
        "whether a natural scene photo shows scene class {label} (one of 6: beach, sunset, "
        "fall foliage, field, mountain, urban; features: colour moments in a 7x7 grid)",
    ),
    "emotions": _Published(
        391,
        202,
        72,
        6,
        (1.81, 1.98),
        "whether a music clip evokes the emotion '{label}' (Tellegen-Watson-Clark model; "
        "features: rhythmic and timbre audio features)",
    ),
}

_SHA256 = {
    "yeast-train.arff": "e759dc991ff54694a4ff9c4314f3be0d6fd2b1994a4b563f57e416394c6aebbd",
    "yeast-test.arff": "4aaac102bff9669a765bf0b378602e5cc8c3b181048282e2f003117b496d552a",
    "yeast.xml": "45fc49ccfd0e1a45788924f40577ac4c5b1b2cb12748b0f03339ed8cdeb9bf1d",
    "scene-train.arff": "b0557a75da7e4b93c83ab686adc6aae9c674cba7466f2cddd7b9594153b99a06",
    "scene-test.arff": "77d0f5ca0a48c1d787574f497a1619c405cf58c41436647960515e989faca418",
    "scene.xml": "c9fad799756d99421a12d512848a1ffe640cceedb689a10c3e2241b7daaf5e80",
    "emotions-train.arff": "bbe704106c79bb8fb99c1d1d2e9bde081d6a2daeb01f100862f11fd91a3c1f98",
    "emotions-test.arff": "f13d4b746b7b5c8eb484bd751d6ac463d4560dff998a93516a5c1fe35daf6c8f",
    "emotions.xml": "b20042828c32a6ca0a871c10a298c1b7b17fd2c453e944c1673d9e9b9bda1e68",
}

MULAN_FILES: dict[str, FileSet] = {
    name: FileSet(
        name,
        FOLDER,
        tuple(
            RemoteFile(f, sha256=_SHA256[f])
            for f in (f"{name}-train.arff", f"{name}-test.arff", f"{name}.xml")
        ),
        (_MIRROR,),
    )
    for name in _PUBLISHED
}
"""The train / test ARFF and label XML of each set, checked by sha256."""

_ATTR = re.compile(r"@attribute\s+('(?:[^']|\\')*'|\"[^\"]*\"|\S+)\s+(.+)$", re.IGNORECASE)
_NUMERIC = {"numeric", "real", "integer"}


def read_arff(text: str, where: str = "ARFF") -> tuple[list[str], np.ndarray]:
    """Parse a dense numeric ARFF file.

    Args:
        text: the file's content.
        where: the file's name, for error messages.

    Returns:
        ``(attribute names, float64 [rows, attributes])``; nominal ``{0,1}`` attributes are
        read as numbers.

    Raises:
        ArchiveError: no ``@data`` section, a string / date / other nominal attribute, a
            sparse row, a missing value, or rows with the wrong number of values.

    Example:
        >>> names, x = read_arff("@relation r\\n@attribute a numeric\\n@attribute 'b c' {0,1}\\n"
        ...                      "@data\\n1.5,0\\n-2,1\\n")
        >>> names, x.tolist()
        (['a', 'b c'], [[1.5, 0.0], [-2.0, 1.0]])
    """
    names: list[str] = []
    lines = text.splitlines()
    for i, raw in enumerate(lines):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        low = line.lower()
        if low.startswith("@relation"):
            continue
        if low.startswith("@attribute"):
            m = _ATTR.match(line)
            if m is None:
                raise ArchiveError(f"{where}: line {i + 1}: cannot parse {line[:80]!r}")
            name, kind = m.group(1).strip("'\""), m.group(2).strip()
            if kind.lower() not in _NUMERIC and not re.fullmatch(r"\{\s*0\s*,\s*1\s*\}", kind):
                raise ArchiveError(
                    f"{where}: attribute {name!r} has type {kind!r}; only numeric and {{0,1}} "
                    "attributes are supported (dense numeric ARFF)"
                )
            names.append(name)
            continue
        if low.startswith("@data"):
            body = "\n".join(
                s for s in lines[i + 1 :] if s.strip() and not s.lstrip().startswith("%")
            )
            if "{" in body:
                raise ArchiveError(f"{where}: sparse ARFF rows are not supported")
            if "?" in body:
                raise ArchiveError(f"{where}: missing values ('?') are not supported")
            try:
                data = np.loadtxt(io.StringIO(body), delimiter=",", ndmin=2, dtype=np.float64)
            except ValueError as exc:
                raise ArchiveError(f"{where}: unreadable data row ({exc})") from exc
            if data.shape[1] != len(names):
                raise ArchiveError(
                    f"{where}: rows have {data.shape[1]} values for {len(names)} attributes"
                )
            return names, data
        raise ArchiveError(f"{where}: line {i + 1}: unexpected {line[:80]!r} before @data")
    raise ArchiveError(f"{where}: no @data section (truncated or not an ARFF file)")


def _label_names(xml: bytes, where: str) -> list[str]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ArchiveError(f"{where}: not a readable label XML file ({exc})") from exc
    return [el.attrib["name"] for el in root.iter() if el.tag.endswith("label")]


def _decode(name: str, paths: dict[str, Path]) -> dict[str, np.ndarray]:
    files, pub = MULAN_FILES[name], _PUBLISHED[name]
    xml_name = f"{name}.xml"
    labels = _label_names(files.read(paths[xml_name], xml_name), str(paths[xml_name]))
    out: dict[str, np.ndarray] = {}
    attrs_seen: list[str] = []
    for split, rows in (("train", pub.train), ("test", pub.test)):
        fname = f"{name}-{split}.arff"
        path = paths[fname]
        text = files.read(path, fname).decode("utf-8")
        attrs, data = read_arff(text, str(path))
        k = len(labels)
        if attrs[-k:] and sorted(attrs[-k:]) != sorted(labels):
            raise ArchiveError(
                f"{path}: the last {k} attributes {attrs[-k:]} are not the labels of "
                f"{xml_name} {labels}. {files.hint}"
            )
        x, y = data[:, :-k], data[:, -k:]
        card = float(y.sum(1).mean()) if len(y) else 0.0
        expected_card = pub.cardinality[0 if split == "train" else 1]
        if (
            len(data) != rows
            or x.shape[1] != pub.features
            or k != pub.labels
            or round(card, 2) != expected_card
        ):
            raise ArchiveError(
                f"{path}: {len(data)} rows, {x.shape[1]} features, {k} labels, label "
                f"cardinality {card:.3f}; the published {name} {split} set has {rows} rows, "
                f"{pub.features} features, {pub.labels} labels, cardinality {expected_card}. "
                f"{files.hint}"
            )
        out[f"{split}_x"] = x.astype(np.float32)
        out[f"{split}_y"] = y.astype(np.float32)
        attrs_seen = attrs
    out["label_names"] = np.array(attrs_seen[-len(labels) :])
    return out


def load_mulan(
    name: Name,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    standardize: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    progress: bool = False,
) -> MultiTaskData:
    """One MULAN set as :class:`MultiTaskData`: each label a binary task, shared inputs.

    Args:
        name: ``"yeast"``, ``"scene"`` or ``"emotions"``.
        data_dir: data directory holding ``mulan_multilabel/``.
        seed: decides which training rows are held out for validation.
        val_fraction: fraction of the train file's rows held out (``0 <= f < 1``).
        standardize: standardise features with the training split's mean and std.
        cache_dir: cache directory for the parsed arrays.
        download: fetch missing files first.
        progress: show download progress.

    Returns:
        Tasks named after the label attributes (in file order), ``kind="binary"``, headline
        metric AUC; ``label_set_metrics`` Hamming loss, micro-F1, macro-F1; ``metadata`` per
        task: (label frequency in the training split,).

    Example:
        >>> data = load_mulan("emotions")  # doctest: +SKIP
        >>> data.num_tasks, data.input_shape, data.sizes("test")[0]  # doctest: +SKIP
        (6, (72,), 202)
    """
    if name not in _PUBLISHED:
        raise ValueError(f"name must be one of {tuple(_PUBLISHED)}, got {name!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    files = MULAN_FILES[name]
    paths = files.require(data_dir, download=download, progress=progress)
    a = cached_arrays(
        resolve_cache_dir(cache_dir) / FOLDER,
        name,
        [FORMAT_VERSION, *source_key(paths)],
        lambda: _decode(name, dict(paths)),
    )
    n = len(a["train_y"])
    perm = np.random.default_rng(seed).permutation(n)
    n_val = round(val_fraction * n)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    xs = {"train": a["train_x"][train_idx], "val": a["train_x"][val_idx], "test": a["test_x"]}
    ys = {"train": a["train_y"][train_idx], "val": a["train_y"][val_idx], "test": a["test_y"]}
    if standardize:
        mean = xs["train"].mean(0)
        std = xs["train"].std(0)
        std[std == 0] = 1.0
        xs = {k: (v - mean) / std for k, v in xs.items()}
    freq = ys["train"].mean(0)
    pub = _PUBLISHED[name]
    tasks = tuple(
        TaskSpec(
            str(label),
            "binary",
            1,
            description=pub.description.format(label=label),
            metadata=(float(freq[j]),),
        )
        for j, label in enumerate(a["label_names"])
    )
    splits = []
    for split in ("train", "val", "test"):
        x = torch.from_numpy(np.ascontiguousarray(xs[split], dtype=np.float32))
        y = torch.from_numpy(np.ascontiguousarray(ys[split]))
        splits.append(tuple(TaskData(x, y[:, j].contiguous()) for j in range(len(tasks))))
    return MultiTaskData(
        name,
        tasks,
        train=splits[0],
        val=splits[1],
        test=splits[2],
        input_shape=(pub.features,),
        shared_inputs=True,
        label_set_metrics=("hamming_loss", "micro_f1", "macro_f1"),
    )


def load_yeast(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    standardize: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    progress: bool = False,
) -> MultiTaskData:
    """MULAN yeast: 14 binary tasks over 103 features; see :func:`load_mulan`."""
    return load_mulan(
        "yeast",
        data_dir,
        seed=seed,
        val_fraction=val_fraction,
        standardize=standardize,
        cache_dir=cache_dir,
        download=download,
        progress=progress,
    )


def load_scene(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    standardize: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    progress: bool = False,
) -> MultiTaskData:
    """MULAN scene: 6 binary tasks over 294 features; see :func:`load_mulan`."""
    return load_mulan(
        "scene",
        data_dir,
        seed=seed,
        val_fraction=val_fraction,
        standardize=standardize,
        cache_dir=cache_dir,
        download=download,
        progress=progress,
    )


def load_emotions(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    standardize: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    progress: bool = False,
) -> MultiTaskData:
    """MULAN emotions: 6 binary tasks over 72 features; see :func:`load_mulan`."""
    return load_mulan(
        "emotions",
        data_dir,
        seed=seed,
        val_fraction=val_fraction,
        standardize=standardize,
        cache_dir=cache_dir,
        download=download,
        progress=progress,
    )
