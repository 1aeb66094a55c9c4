"""MultiMNIST and MultiFashion: two overlapping images, the left and the right one as two tasks.

Construction of Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization"
(NeurIPS 2018), section 7.1, as their public loader builds it:

1. for every image ``l`` of a pool (the *left* image), draw a partner ``r`` uniformly from the
   same pool (with replacement, possibly ``l`` itself);
2. on a ``36 x 36`` canvas of zeros put ``l`` at the top-left (rows and columns ``0:28``) and
   ``r`` shifted 6 pixels down and right (``6:34``); where they overlap (``6:28``) keep the
   pixel-wise maximum;
3. resize the canvas to ``28 x 28`` with nearest-neighbour sampling (Pillow's ``NEAREST``,
   which is what their ``scipy.misc.imresize(..., interp='nearest')`` called);
4. the labels are the left image's class (task ``"left"``) and the right image's (``"right"``).

Differences, stated: (a) their loader drew partners with NumPy's global RNG; here every draw
comes from ``numpy.random.default_rng(seed)``, so the data set is a function of ``seed``;
(b) ``imresize`` also stretched each float canvas to the full 0..255 range (``bytescale``);
here pixels keep their ``uint8`` values (a canvas whose brightest pixel is 255, almost all of
them, is unchanged by that stretch); (c) they built no validation split (the test set served
as validation); here ``val_size`` images of the training set (10,000 by default, a seeded
permutation) are held out *before* pairing, and pairs are drawn within each part, so no source
image appears in two splits. Sizes: train 50,000, validation 10,000, test 10,000 (pairs within
the official 10,000 test images).

MultiFashion applies the same construction to Fashion-MNIST (as in Lin et al. 2019, "Pareto
Multi-Task Learning"). Both tasks share the input image: ``shared_inputs=True``.
The composites are cached per (source files, seed, val_size, format), ~55 MB.
"""

from __future__ import annotations

import os
from functools import cache

import numpy as np
import torch
from PIL import Image

from manytask.data.cache import cached_arrays
from manytask.data.mnist import (
    FASHION_CLASSES,
    FILESETS,
    Source,
    mnist_arrays,
    split_train_val,
)
from manytask.data.multitask import MultiTaskData, TaskData, TaskSpec
from manytask.data.paths import cache_dir as resolve_cache_dir
from manytask.data.sources import source_key

__all__ = ["CANVAS", "SHIFT", "load_multi_fashion", "load_multi_mnist", "overlay_pairs"]

FORMAT_VERSION = 1
CANVAS = 36
"""Side of the canvas the two 28x28 images are placed on."""
SHIFT = 6
"""Offset (down and right) of the right image on the canvas."""
SIZE = 28


@cache
def _nearest_index(src: int, dst: int) -> np.ndarray:
    """Source pixel of each output pixel for Pillow's NEAREST resize from ``src`` to ``dst``."""
    ramp = Image.fromarray(np.arange(src, dtype=np.uint8)[None, :])
    return np.asarray(ramp.resize((dst, 1), Image.Resampling.NEAREST))[0].astype(np.intp)


def overlay_pairs(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Overlay each ``left[i]`` (top-left) and ``right[i]`` (shifted), resize to 28x28.

    Args:
        left: ``uint8 [n, 28, 28]``.
        right: ``uint8 [n, 28, 28]``.

    Returns:
        ``uint8 [n, 28, 28]``: for each pair, Pillow's nearest-neighbour resize of the
        ``36x36`` canvas holding ``max(left at 0:28, right at 6:34)``.

    Example:
        >>> a = np.zeros((1, 28, 28), np.uint8); a[0, 0, 0] = 200
        >>> b = np.zeros((1, 28, 28), np.uint8); b[0, 26, 26] = 100  # canvas (32, 32)
        >>> out = overlay_pairs(a, b)
        >>> out.shape, int(out[0, 0, 0]), int(out[0, 25, 25])
        ((1, 28, 28), 200, 100)
    """
    if left.shape != right.shape or left.shape[1:] != (SIZE, SIZE) or left.dtype != np.uint8:
        raise ValueError(
            f"left and right must be uint8 [n, {SIZE}, {SIZE}] of the same shape, got "
            f"{left.dtype} {left.shape} and {right.dtype} {right.shape}"
        )
    canvas = np.zeros((len(left), CANVAS, CANVAS), dtype=np.uint8)
    canvas[:, :SIZE, :SIZE] = left
    window = canvas[:, SHIFT : SHIFT + SIZE, SHIFT : SHIFT + SIZE]
    np.maximum(window, right, out=window)
    idx = _nearest_index(CANVAS, SIZE)
    return np.ascontiguousarray(canvas[:, idx][:, :, idx])


def _build(source: Source, arrays: dict[str, np.ndarray], seed: int, val_size: int) -> dict:
    rng = np.random.default_rng([seed, 1])  # independent of split_train_val's stream
    train_idx, val_idx = split_train_val(len(arrays["train_labels"]), val_size, seed)
    sources = {
        "train": ("train", train_idx),
        "val": ("train", val_idx),
        "test": ("test", np.arange(len(arrays["test_labels"]))),
    }
    out: dict[str, np.ndarray] = {}
    for split, (src, idx) in sources.items():
        images, labels = arrays[f"{src}_images"][idx], arrays[f"{src}_labels"][idx]
        partner = rng.integers(0, len(images), size=len(images))
        out[f"{split}_x"] = overlay_pairs(images, images[partner])
        out[f"{split}_left"] = labels
        out[f"{split}_right"] = labels[partner]
        # Where each composite came from: indices into the MNIST file's train or test images.
        out[f"{split}_left_index"] = idx
        out[f"{split}_right_index"] = idx[partner]
    return out


def _load(
    source: Source,
    data_dir: str | os.PathLike[str] | None,
    seed: int,
    val_size: int,
    cache_dir: str | os.PathLike[str] | None,
    download: bool,
    progress: bool,
) -> MultiTaskData:
    arrays = mnist_arrays(
        source, data_dir, cache_dir=cache_dir, download=download, progress=progress
    )
    files = FILESETS[source]
    paths = files.require(data_dir)  # the same source files decide the cache key
    name = "multi_mnist" if source == "mnist" else "multi_fashion"
    built = cached_arrays(
        resolve_cache_dir(cache_dir) / files.folder,
        f"{name}-seed{seed}",
        [FORMAT_VERSION, CANVAS, SHIFT, SIZE, seed, val_size, *source_key(paths)],
        lambda: _build(source, arrays, seed, val_size),
    )
    if source == "mnist":
        what, classes = "handwritten digit (0-9)", "0-9"
    else:
        what, classes = "Fashion-MNIST article", ", ".join(FASHION_CLASSES)
    tasks = (
        TaskSpec(
            "left",
            "multiclass",
            10,
            description=f"the {what} at the top-left of two overlapping images; classes {classes}",
        ),
        TaskSpec(
            "right",
            "multiclass",
            10,
            description=f"the {what} at the bottom-right of two overlapping images; "
            f"classes {classes}",
        ),
    )
    splits = []
    for split in ("train", "val", "test"):
        x = torch.from_numpy(built[f"{split}_x"]).unsqueeze(1)
        splits.append(
            (
                TaskData(x, torch.from_numpy(built[f"{split}_left"].astype(np.int64))),
                TaskData(x, torch.from_numpy(built[f"{split}_right"].astype(np.int64))),
            )
        )
    return MultiTaskData(
        name,
        tasks,
        train=splits[0],
        val=splits[1],
        test=splits[2],
        input_shape=(1, SIZE, SIZE),
        shared_inputs=True,
    )


def load_multi_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    val_size: int = 10_000,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    progress: bool = False,
) -> MultiTaskData:
    """MultiMNIST (Sener & Koltun 2018): tasks ``"left"`` and ``"right"`` digit, 10 classes each.

    Args:
        data_dir: data directory holding ``mnist/`` (see :mod:`manytask.data.mnist`).
        seed: decides the validation hold-out and every partner draw.
        val_size: training images held out for validation before pairing.
        cache_dir: cache directory for the composites.
        download: fetch missing MNIST files first.
        progress: show download progress.

    Returns:
        ``x`` ``uint8 [n, 1, 28, 28]`` shared by both tasks; sizes ``60000 - val_size`` /
        ``val_size`` / ``10000``.

    Example:
        >>> data = load_multi_mnist()  # doctest: +SKIP
        >>> data.task_names, data.sizes("train")  # doctest: +SKIP
        (('left', 'right'), (50000, 50000))
    """
    return _load("mnist", data_dir, seed, val_size, cache_dir, download, progress)


def load_multi_fashion(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    val_size: int = 10_000,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    progress: bool = False,
) -> MultiTaskData:
    """MultiFashion: the MultiMNIST construction on Fashion-MNIST; arguments as there."""
    return _load("fashion_mnist", data_dir, seed, val_size, cache_dir, download, progress)
