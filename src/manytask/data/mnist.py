"""MNIST (LeCun et al. 1998) and Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from IDX files.

Files, in ``<data_dir>/mnist/`` and ``<data_dir>/fashion_mnist/``: ``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``
(IDX: big-endian magic 2051 for images / 2049 for labels, then the dimensions, then
``uint8`` data).

Verification: by the md5 of the *decompressed* files, which are the checksums published for
the official uncompressed files (MNIST: as listed by many loaders; Fashion-MNIST: its README).
The ``.gz`` bytes are not checked, on purpose: copies that were re-compressed (the shared data
folder's MNIST files were re-gzipped with ``gzip -9 -n``, Debian's Fashion-MNIST files too) have
other ``.gz`` bytes but byte-identical content, and they pass; a changed pixel does not. The
decoded arrays are then checked against the published counts: 60,000 train and 10,000 test
images of 28x28, and the per-class label counts.

Downloads (:data:`MNIST_FILES`, :data:`FASHION_MNIST_FILES`) try the official site first, then
a mirror; each file lands in a temporary file, is checked, and only then renamed.

Decoded arrays are cached in ``<cache_dir>/<folder>/`` (see :mod:`manytask.data.cache`).
:func:`load_mnist` / :func:`load_fashion_mnist` give single-task :class:`MultiTaskData` (10-way
classification; the train set split into train / validation by a seeded permutation), used
as single-task baselines and as the source of MultiMNIST / MultiFashion
(:mod:`manytask.data.multimnist`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from manytask.data.archives import ArchiveError
from manytask.data.cache import cached_arrays
from manytask.data.multitask import MultiTaskData, TaskData, TaskSpec
from manytask.data.paths import cache_dir as resolve_cache_dir
from manytask.data.sources import FileSet, RemoteFile, source_key

__all__ = [
    "FASHION_CLASSES",
    "FASHION_MNIST_FILES",
    "FILESETS",
    "MNIST_FILES",
    "load_fashion_mnist",
    "load_mnist",
    "mnist_arrays",
]

FORMAT_VERSION = 1
_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

MNIST_FILES = FileSet(
    "mnist",
    "mnist",
    tuple(
        RemoteFile(name, content_md5=md5)
        for name, md5 in zip(
            _NAMES,
            (
                "6bbc9ace898e44ae57da46a324031adb",
                "a25bea736e30d166cdddb491f175f624",
                "2646ac647ad5339dbf082846283269ea",
                "27ae3e4e09519cfbb04c329615203637",
            ),
            strict=True,
        )
    ),
    ("http://yann.lecun.com/exdb/mnist", "https://ossci-datasets.s3.amazonaws.com/mnist"),
)
"""MNIST's four IDX files, checked by the md5 of their decompressed content."""

FASHION_MNIST_FILES = FileSet(
    "fashion_mnist",
    "fashion_mnist",
    tuple(
        RemoteFile(name, content_md5=md5)
        for name, md5 in zip(
            _NAMES,
            (
                "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                "9018921c3c673c538a1fc5bad174d6f9",
                "8181f5470baa50b63fa0f6fddb340f0a",
                "15d484375f8d13e6eb1aabb0c3f46965",
            ),
            strict=True,
        )
    ),
    ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",),
)
"""Fashion-MNIST's four IDX files (Zalando's official bucket), checked like MNIST's."""

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

Source = Literal["mnist", "fashion_mnist"]
FILESETS: dict[str, FileSet] = {"mnist": MNIST_FILES, "fashion_mnist": FASHION_MNIST_FILES}
"""The files of each source by name."""
# Published counts: MNIST's per-class counts (LeCun's page), Fashion-MNIST's 6,000 / 1,000.
_CLASS_COUNTS: dict[str, dict[str, list[int]]] = {
    "mnist": {
        "train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
        "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    },
    "fashion_mnist": {"train": [6000] * 10, "test": [1000] * 10},
}


def parse_idx(content: bytes, magic: int, where: str) -> np.ndarray:
    """Decode an IDX file's content (``uint8`` data) to an array of its declared shape.

    Raises:
        ArchiveError: wrong magic number or a length that does not match the header.

    Example:
        >>> raw = bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9])
        >>> parse_idx(raw, 2049, "labels").tolist()
        [7, 8, 9]
    """
    if len(content) < 4 or int.from_bytes(content[:4], "big") != magic:
        found = int.from_bytes(content[:4], "big") if len(content) >= 4 else None
        raise ArchiveError(f"{where}: IDX magic number {found}, expected {magic}")
    ndim = content[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(content) != header + int(np.prod(shape)):
        raise ArchiveError(
            f"{where}: {len(content) - header} data bytes for declared shape {shape} "
            "(truncated or corrupt)"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)


def _decode(source: Source, paths: dict[str, Path]) -> dict[str, np.ndarray]:
    files = FILESETS[source]
    out: dict[str, np.ndarray] = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images_name = f"{prefix}-images-idx3-ubyte.gz"
        labels_name = f"{prefix}-labels-idx1-ubyte.gz"
        images_path, labels_path = paths[images_name], paths[labels_name]
        images = parse_idx(files.read(images_path, images_name), 2051, str(images_path))
        labels = parse_idx(files.read(labels_path, labels_name), 2049, str(labels_path))
        counts = np.bincount(labels, minlength=10).tolist()
        expected = _CLASS_COUNTS[source][split]
        if images.shape[1:] != (28, 28) or len(images) != len(labels) or counts != expected:
            raise ArchiveError(
                f"{images_path}: {len(images)} images of {images.shape[1:]} and labels with "
                f"class counts {counts}; expected 28x28 images with class counts {expected} "
                f"({sum(expected)} in all). {files.hint}"
            )
        out[f"{split}_images"] = images.copy()
        out[f"{split}_labels"] = labels.astype(np.int64)
    return out


def mnist_arrays(
    source: Source = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """The verified, decoded MNIST or Fashion-MNIST arrays (cached).

    Args:
        source: ``"mnist"`` or ``"fashion_mnist"``.
        data_dir: data directory (argument > ``$MANYTASK_DATA`` > ``~/.cache/manytask/data``).
        cache_dir: cache directory for the decoded arrays.
        download: fetch missing files first.
        progress: show download progress.

    Returns:
        ``train_images`` ``uint8 [60000, 28, 28]``, ``train_labels`` ``int64 [60000]``,
        ``test_images`` ``uint8 [10000, 28, 28]``, ``test_labels`` ``int64 [10000]``
        (bright strokes = 255, as in the files).

    Raises:
        ArchiveError: a file is missing, corrupt or has the wrong content or counts.
    """
    if source not in FILESETS:
        raise ValueError(f"source must be one of {tuple(FILESETS)}, got {source!r}")
    files = FILESETS[source]
    paths = files.require(data_dir, download=download, progress=progress)
    return cached_arrays(
        resolve_cache_dir(cache_dir) / files.folder,
        source,
        [FORMAT_VERSION, *source_key(paths)],
        lambda: _decode(source, dict(paths)),
    )


def split_train_val(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) indices of ``n`` examples; ``val_size`` drawn by a seeded permutation.

    Example:
        >>> train, val = split_train_val(10, 3, seed=0)
        >>> len(train), len(val), sorted({*train, *val}) == list(range(10))
        (7, 3, True)
    """
    if isinstance(val_size, bool) or not isinstance(val_size, int) or not 0 <= val_size < n:
        raise ValueError(f"val_size must be an int in [0, {n}), got {val_size!r}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def _load_single(
    source: Source,
    data_dir: str | os.PathLike[str] | None,
    seed: int,
    val_size: int,
    cache_dir: str | os.PathLike[str] | None,
    download: bool,
    progress: bool,
) -> MultiTaskData:
    a = mnist_arrays(source, data_dir, cache_dir=cache_dir, download=download, progress=progress)
    train_idx, val_idx = split_train_val(len(a["train_labels"]), val_size, seed)

    def part(images: np.ndarray, labels: np.ndarray) -> TaskData:
        x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
        return TaskData(x, torch.from_numpy(labels))

    if source == "mnist":
        desc = "classify a handwritten digit (MNIST) into 0-9"
    else:
        desc = "classify a Fashion-MNIST article photo: " + ", ".join(FASHION_CLASSES)
    spec = TaskSpec("digit" if source == "mnist" else "article", "multiclass", 10, description=desc)
    return MultiTaskData(
        source,
        (spec,),
        (part(a["train_images"][train_idx], a["train_labels"][train_idx]),),
        (part(a["train_images"][val_idx], a["train_labels"][val_idx]),),
        (part(a["test_images"], a["test_labels"]),),
        (1, 28, 28),
        False,
    )


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    val_size: int = 10_000,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    progress: bool = False,
) -> MultiTaskData:
    """MNIST as a one-task :class:`MultiTaskData` (single-task baseline).

    Splits: train = the 60,000 training images less ``val_size`` held out for validation
    (a permutation seeded by ``seed``); test = the official 10,000. ``x`` is ``uint8
    [n, 1, 28, 28]`` (stroke = 255; see :func:`~manytask.data.multitask.to_float`).

    Example:
        >>> data = load_mnist()  # doctest: +SKIP
        >>> data.sizes("train"), data.sizes("val"), data.sizes("test")  # doctest: +SKIP
        ((50000,), (10000,), (10000,))
    """
    return _load_single("mnist", data_dir, seed, val_size, cache_dir, download, progress)


def load_fashion_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    val_size: int = 10_000,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    progress: bool = False,
) -> MultiTaskData:
    """Fashion-MNIST as a one-task :class:`MultiTaskData`; splits as :func:`load_mnist`."""
    return _load_single("fashion_mnist", data_dir, seed, val_size, cache_dir, download, progress)
