"""UCI Census-Income (KDD) as in the MMoE paper, plus a regression: tasks with different losses.

Data: Lane & Kohavi's extraction of the 1994-1995 Current Population Surveys (UCI, CC BY 4.0),
199,523 training and 99,762 test records of 40 attributes, an instance weight and the income
label. Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts" (KDD 2018), section 5.2 (task group 1), use two binary tasks:

- ``income``: income above $50,000 (label ``50000+.``);
- ``never_married``: marital status is "Never married".

Features, as the paper and its public reproductions process them: every nominal attribute
(33 in the ``.names`` file, less ``marital stat``, which is a label) is one-hot encoded, with
the vocabulary of the training file (a test value never seen in training is all zeros);
the continuous attributes (age, wage per hour, capital gains, capital losses, dividends from
stocks, number of persons worked for employer, weeks worked in year) are standardised with the
training mean and std; the instance weight is not a feature (the ``.names`` file says it
"should not be used in the classifiers"); the task labels are removed from the features.

Mixed losses: ``regression="age"`` (the default) adds a third task, the person's age, as a
regression target (MSE), and removes age from the features (a regression target must not be
an input). Age is a well-behaved continuous target (0-90 years) that every record has;
``"wage_per_hour"`` is the alternative (94% zeros, heavy tail). The target is standardised
with the training mean and std unless ``standardize_target=False`` (then MSE is in years^2).
``regression=None`` gives exactly the paper's two-task setting (age stays a feature).

Splits: train = the 199,523 training records; the 99,762 test records are split 1:1 at random
(a permutation seeded by ``seed``) into validation (49,881) and test (49,881), as the MMoE paper
describes and as the public Keras reproduction (drawbridge/keras-mmoe) does it.

Checks: each file by the md5 of its decompressed content (the UCI files are gzip; a
re-compressed ``.bz2`` copy, as in the shared data folder, or the plain file passes too), then
the published counts: 199,523 / 99,762 records of 42 fields; 12,382 / 6,186 records above
$50K; 43,143 test records "Never married".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from manytask.data.archives import ArchiveError
from manytask.data.cache import cached_arrays
from manytask.data.multitask import MultiTaskData, TaskData, TaskSpec
from manytask.data.paths import cache_dir as resolve_cache_dir
from manytask.data.sources import FileSet, RemoteFile, source_key

__all__ = ["CENSUS_FILES", "COLUMNS", "CONTINUOUS", "load_census_income"]

FORMAT_VERSION = 1
FOLDER = "uci_census_income_kdd"

CENSUS_FILES = FileSet(
    "census_income",
    FOLDER,
    (
        RemoteFile(
            "census-income.data.gz",
            content_md5="887f4dc410a99bc332bddbb0a4195b88",
            also_as=("census-income.data.bz2", "census-income.data"),
        ),
        RemoteFile(
            "census-income.test.gz",
            content_md5="b82952d217858365c8e597827e3e5468",
            also_as=("census-income.test.bz2", "census-income.test"),
        ),
    ),
    ("https://archive.ics.uci.edu/ml/machine-learning-databases/census-income-mld",),
)
"""The UCI training and test files, checked by the md5 of their decompressed content."""

COLUMNS: tuple[str, ...] = (
    "age",
    "class of worker",
    "detailed industry recode",
    "detailed occupation recode",
    "education",
    "wage per hour",
    "enroll in edu inst last wk",
    "marital stat",
    "major industry code",
    "major occupation code",
    "race",
    "hispanic origin",
    "sex",
    "member of a labor union",
    "reason for unemployment",
    "full or part time employment stat",
    "capital gains",
    "capital losses",
    "dividends from stocks",
    "tax filer stat",
    "region of previous residence",
    "state of previous residence",
    "detailed household and family stat",
    "detailed household summary in household",
    "instance weight",
    "migration code-change in msa",
    "migration code-change in reg",
    "migration code-move within reg",
    "live in this house 1 year ago",
    "migration prev res in sunbelt",
    "num persons worked for employer",
    "family members under 18",
    "country of birth father",
    "country of birth mother",
    "country of birth self",
    "citizenship",
    "own business or self employed",
    "fill inc questionnaire for veteran's admin",
    "veterans benefits",
    "weeks worked in year",
    "year",
    "income",
)
"""The 42 fields of a record, in file order (from ``census-income.names``)."""

CONTINUOUS: tuple[str, ...] = (
    "age",
    "wage per hour",
    "capital gains",
    "capital losses",
    "dividends from stocks",
    "num persons worked for employer",
    "weeks worked in year",
)
"""The 7 continuous attributes of ``census-income.names``; the other 33 are nominal."""

_IGNORED = ("instance weight", "income", "marital stat")
NOMINAL: tuple[str, ...] = tuple(c for c in COLUMNS if c not in CONTINUOUS and c not in _IGNORED)
"""The 32 nominal feature columns (``marital stat`` is a label, not a feature)."""

_PUBLISHED = {"train": (199_523, 12_382, None), "test": (99_762, 6_186, 43_143)}

Regression = Literal["age", "wage_per_hour"]


def _parse(content: bytes, where: str) -> list[list[str]]:
    text = content.decode("ascii", errors="strict")
    rows = [line.split(", ") for line in text.splitlines() if line.strip()]
    bad = next((i for i, r in enumerate(rows) if len(r) != len(COLUMNS)), None)
    if bad is not None:
        raise ArchiveError(
            f"{where}: record {bad + 1} has {len(rows[bad])} fields, expected {len(COLUMNS)} "
            f"separated by ', '. {CENSUS_FILES.hint}"
        )
    return rows


def _decode(paths: Mapping[str, Path]) -> dict[str, np.ndarray]:
    parsed: dict[str, list[list[str]]] = {}
    for split, name in (("train", "census-income.data.gz"), ("test", "census-income.test.gz")):
        path = paths[name]
        rows = _parse(CENSUS_FILES.read(path, name), str(path))
        n = len(rows)
        above = sum(r[-1] == "50000+." for r in rows)
        never = sum(r[7] == "Never married" for r in rows)
        labels_ok = all(r[-1] in ("50000+.", "- 50000.") for r in rows)
        want_n, want_above, want_never = _PUBLISHED[split]
        if n != want_n or above != want_above or not labels_ok or want_never not in (None, never):
            raise ArchiveError(
                f"{path}: {n} records, {above} above 50K, {never} never married; the published "
                f"{split} file has {want_n} records, {want_above} above 50K"
                + (f", {want_never} never married" if want_never else "")
                + f". {CENSUS_FILES.hint}"
            )
        parsed[split] = rows
    index = {c: i for i, c in enumerate(COLUMNS)}
    out: dict[str, np.ndarray] = {}
    vocab_sizes: list[int] = []
    vocab_words: list[str] = []
    codes = {s: np.empty((len(parsed[s]), len(NOMINAL)), dtype=np.int16) for s in parsed}
    for j, col in enumerate(NOMINAL):
        i = index[col]
        vocab = sorted({r[i] for r in parsed["train"]})
        lookup = {v: k for k, v in enumerate(vocab)}
        vocab_sizes.append(len(vocab))
        vocab_words.extend(f"{col}={v}" for v in vocab)
        for split, rows in parsed.items():
            codes[split][:, j] = [lookup.get(r[i], -1) for r in rows]
    for split, rows in parsed.items():
        out[f"{split}_codes"] = codes[split]
        out[f"{split}_continuous"] = np.array(
            [[float(r[index[c]]) for c in CONTINUOUS] for r in rows], dtype=np.float64
        )
        out[f"{split}_income"] = np.array([r[-1] == "50000+." for r in rows], dtype=np.uint8)
        out[f"{split}_never_married"] = np.array(
            [r[index["marital stat"]] == "Never married" for r in rows], dtype=np.uint8
        )
    out["vocab_sizes"] = np.array(vocab_sizes, dtype=np.int64)
    out["vocab_words"] = np.array(vocab_words)
    return out


def _one_hot(codes: np.ndarray, sizes: np.ndarray, continuous: np.ndarray) -> np.ndarray:
    """``[n, sum(sizes) + c]``: one-hot nominal codes (``-1`` = all zeros), then ``continuous``."""
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    width = int(sizes.sum()) + continuous.shape[1]
    x = np.zeros((len(codes), width), dtype=np.float32)
    flat = (np.arange(len(codes), dtype=np.int64) * width)[:, None] + offsets + codes
    x.reshape(-1)[flat[codes >= 0]] = 1.0
    x[:, int(sizes.sum()) :] = continuous
    return x


def load_census_income(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    regression: Regression | None = "age",
    standardize_target: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    progress: bool = False,
) -> MultiTaskData:
    """UCI Census-Income (KDD): ``income`` and ``never_married`` (binary), plus a regression.

    Args:
        data_dir: data directory holding ``uci_census_income_kdd/``.
        seed: decides the 1:1 split of the test records into validation and test.
        regression: ``"age"`` (default) or ``"wage_per_hour"`` as a third, regression task
            (removed from the features), or None for the paper's two tasks.
        standardize_target: standardise the regression target with the training mean / std.
        cache_dir: cache directory for the parsed records.
        download: fetch missing files first.
        progress: show download progress.

    Returns:
        ``shared_inputs=True`` data; ``x`` ``float32 [n, D]`` (one-hot nominal columns, then
        the standardised continuous ones); sizes 199,523 / 49,881 / 49,881. Each task's
        ``metadata`` is (training label mean, training label std, 1 if regression else 0), in
        the label's own units (years for age).

    Example:
        >>> data = load_census_income()  # doctest: +SKIP
        >>> data.task_names, data.sizes("val")  # doctest: +SKIP
        (('income', 'never_married', 'age'), (49881, 49881, 49881))
    """
    if regression not in (None, "age", "wage_per_hour"):
        raise ValueError(f"regression must be 'age', 'wage_per_hour' or None, got {regression!r}")
    paths = CENSUS_FILES.require(data_dir, download=download, progress=progress)
    a = cached_arrays(
        resolve_cache_dir(cache_dir) / FOLDER,
        "census-income",
        [FORMAT_VERSION, *source_key(paths)],
        lambda: _decode(paths),
    )
    target_col = None if regression is None else CONTINUOUS.index(regression.replace("_", " "))
    feature_cols = [j for j in range(len(CONTINUOUS)) if j != target_col]
    cont_train = a["train_continuous"][:, feature_cols]
    mean, std = cont_train.mean(0), cont_train.std(0)
    std[std == 0] = 1.0

    n_test = len(a["test_income"])
    perm = np.random.default_rng(seed).permutation(n_test)
    half = n_test // 2
    index = {"train": None, "val": np.sort(perm[:half]), "test": np.sort(perm[half:])}

    def rows(split: str, key: str) -> np.ndarray:
        src = "train" if split == "train" else "test"
        arr = a[f"{src}_{key}"]
        idx = index[split]
        return arr if idx is None else arr[idx]

    t_raw = None if target_col is None else a["train_continuous"][:, target_col]
    tasks = [
        TaskSpec(
            "income",
            "binary",
            1,
            description="whether a person's income is above $50,000 a year (US Census 1994-95)",
            metadata=_stats(a["train_income"], False),
        ),
        TaskSpec(
            "never_married",
            "binary",
            1,
            description="whether a person's marital status is 'never married' (US Census 1994-95)",
            metadata=_stats(a["train_never_married"], False),
        ),
    ]
    if regression is not None and t_raw is not None:
        unit = "years" if regression == "age" else "dollars per hour"
        tasks.append(
            TaskSpec(
                regression,
                "regression",
                1,
                description=f"a person's {regression.replace('_', ' ')} in {unit}, predicted "
                "from the other census attributes (US Census 1994-95)",
                metadata=_stats(t_raw, True),
            )
        )
    t_mean, t_std = (0.0, 1.0)
    if t_raw is not None and standardize_target:
        t_mean, t_std = float(t_raw.mean()), float(t_raw.std()) or 1.0

    splits = []
    for split in ("train", "val", "test"):
        cont = (rows(split, "continuous")[:, feature_cols] - mean) / std
        x = torch.from_numpy(_one_hot(rows(split, "codes"), a["vocab_sizes"], cont))
        parts = [
            TaskData(x, torch.from_numpy(rows(split, "income").astype(np.float32))),
            TaskData(x, torch.from_numpy(rows(split, "never_married").astype(np.float32))),
        ]
        if target_col is not None:
            y = (rows(split, "continuous")[:, target_col] - t_mean) / t_std
            parts.append(TaskData(x, torch.from_numpy(y.astype(np.float32)).unsqueeze(1)))
        splits.append(tuple(parts))
    return MultiTaskData(
        "census_income",
        tuple(tasks),
        train=splits[0],
        val=splits[1],
        test=splits[2],
        input_shape=(int(a["vocab_sizes"].sum()) + len(feature_cols),),
        shared_inputs=True,
    )


def _stats(values: np.ndarray, regression: bool) -> tuple[float, float, float]:
    v = values.astype(np.float64)
    return (float(v.mean()), float(v.std()), 1.0 if regression else 0.0)
