"""Few-shot prediction on a user's own images: support folders per class, query images."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from manytask.data.images import image_files, images_to_input
from manytask.typed import ManytaskError

__all__ = ["Prediction", "predict_folders"]


@dataclass(frozen=True)
class Prediction:
    """One query image's predicted class and its probability."""

    path: str
    label: str
    probability: float


@torch.no_grad()
def predict_folders(
    learner: Any,
    support: str | os.PathLike[str],
    query: str | os.PathLike[str],
    *,
    in_shape: tuple[int, ...],
    device: torch.device | str = "cpu",
) -> list[Prediction]:
    """Classify every image under ``query`` among the classes of ``support``.

    Args:
        learner: a trained classification learner (e.g. from :func:`manytask.load_run`).
        support: a folder with one sub-folder per class (its name is the class label), each
            holding that class's example images; classes may have different numbers of shots.
        query: a folder of images to classify (searched recursively).
        in_shape: the learner's per-example input shape.
        device: where to run.

    Returns:
        One :class:`Prediction` per query image, in path order; the probability is the
        softmax of the learner's logits.
    """
    root = Path(support)
    classes = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if len(classes) < 2:
        raise ManytaskError(
            f"--support {root}: needs one sub-folder per class, at least 2 (found {len(classes)})"
        )
    paths, labels = [], []
    for label, folder in enumerate(classes):
        files = image_files(folder)
        if not files:
            raise ManytaskError(f"--support {folder}: this class folder holds no images")
        paths += files
        labels += [label] * len(files)
    queries = image_files(query)
    if not queries:
        raise ManytaskError(f"--query {query}: no images found")
    try:
        sx = images_to_input(paths, in_shape)
        qx = images_to_input(queries, in_shape)
    except ValueError as exc:
        raise ManytaskError(str(exc)) from None
    sy = torch.tensor(labels, dtype=torch.long)
    learner.eval()
    try:
        logits = learner(
            sx.unsqueeze(0).to(device), sy.unsqueeze(0).to(device), qx.unsqueeze(0).to(device),
            ways=len(classes),
        )[0].float()  # fmt: skip
    except ValueError as exc:  # e.g. a learner with one output per class, trained at other ways
        raise ManytaskError(f"--support {root}: {len(classes)} classes: {exc}") from None
    probs = torch.softmax(logits, dim=-1).cpu()
    best = probs.argmax(-1)
    return [
        Prediction(str(q), classes[int(b)].name, float(probs[i, b]))
        for i, (q, b) in enumerate(zip(queries, best, strict=True))
    ]
