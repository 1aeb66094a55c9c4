"""Your own image files as exactly the input a trained learner expects.

A store holds images as ``uint8`` with ink (foreground) = 255 on a dark background, and
learners see them as ``float32`` in ``[0, 1]`` with a channel axis. :func:`images_to_input`
turns files into that form:

1. 1-bit images (Omniglot's PNGs) are resized exactly as the store was built (Pillow's
   LANCZOS on the 1-bit image; ink is the black pixels), so an Omniglot file gives exactly the
   store's tensor;
2. other images are converted to grayscale (or RGB for 3 channels), resized with LANCZOS, and
   inverted when their background is light (the mean of the border pixels above 127), so dark
   ink on white paper becomes bright ink on black, as in the store;
3. values are divided by 255 and a channel axis is added: ``[N, C, H, W]``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["IMAGE_SUFFIXES", "image_files", "images_to_input"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Every image file under ``folder`` (recursively), sorted by path."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _one(path: Path, channels: int, height: int, width: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "1" and channels == 1:
                if im.size != (width, height):  # exactly how the store resizes Omniglot
                    im = im.resize((width, height), Image.Resampling.LANCZOS)
                img = im
                return np.where(np.asarray(img, dtype=bool), 0, 255).astype(np.uint8)[None]
            img = im.convert("L" if channels == 1 else "RGB")
    except OSError as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from None
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    border = np.concatenate(
        [arr[:, 0].ravel(), arr[:, -1].ravel(), arr[:, :, 0].ravel(), arr[:, :, -1].ravel()]
    )
    if border.mean() > 127:
        arr = 255 - arr
    return arr


def images_to_input(paths: Sequence[str | os.PathLike[str]], in_shape: Sequence[int]) -> Tensor:
    """Image files as a learner's input ``float32 [N, C, H, W]`` in ``[0, 1]``, ink bright.

    Args:
        paths: image files.
        in_shape: the learner's per-example input shape ``(C, H, W)`` (1 or 3 channels).

    Raises:
        ValueError: a file is not an image, or ``in_shape`` is not an image shape.
        FileNotFoundError: a file is missing.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> folder = Path(tempfile.mkdtemp())
        >>> Image.new("L", (50, 40), color=255).save(folder / "blank.png")  # white paper
        >>> x = images_to_input([folder / "blank.png"], (1, 28, 28))
        >>> tuple(x.shape), float(x.max())
        ((1, 1, 28, 28), 0.0)
    """
    if len(in_shape) != 3 or in_shape[0] not in (1, 3):
        raise ValueError(f"in_shape must be (C, H, W) with 1 or 3 channels, got {tuple(in_shape)}")
    c, h, w = (int(s) for s in in_shape)
    arrays = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such image file")
        arrays.append(_one(path, c, h, w))
    if not arrays:
        raise ValueError("images_to_input: no image files given")
    return torch.from_numpy(np.stack(arrays)).float().div_(255.0)
