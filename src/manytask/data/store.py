"""An in-memory image store: every image of a data set decoded once into one ``uint8`` tensor.

Episodes are drawn from a store by indexing (one gather per meta-batch); nothing is decoded
per episode. Pixel convention: ``uint8`` with ink (foreground) = 255 and background = 0;
learners see ``images.float() / 255`` so ink is 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ImageStore"]


@dataclass(frozen=True)
class ImageStore:
    """Decoded images of a class-structured data set.

    Attributes:
        images: ``uint8`` tensor ``[classes, instances, H, W]`` (ink = 255).
        class_names: one name per class, e.g. ``"Korean/character01"``.
        alphabets: the distinct groups (Omniglot alphabets) the classes belong to.
        alphabet_of: ``int64`` tensor ``[classes]``, index into ``alphabets`` for each class.
        drawers: ``int64`` tensor ``[classes, instances]``, who drew each image (1..20 for
            Omniglot; 0 where unknown).
        source: a short description of where the images came from (for caches and reports).

    Example:
        >>> import torch
        >>> store = ImageStore(
        ...     images=torch.zeros(3, 4, 8, 8, dtype=torch.uint8),
        ...     class_names=("A/c1", "A/c2", "B/c1"),
        ...     alphabets=("A", "B"),
        ...     alphabet_of=torch.tensor([0, 0, 1]),
        ...     drawers=torch.arange(1, 5).repeat(3, 1),
        ...     source="zeros",
        ... )
        >>> store.num_classes, store.num_instances, store.image_size
        (3, 4, 8)
        >>> store.subset([2]).class_names
        ('B/c1',)
    """

    images: Tensor
    class_names: tuple[str, ...]
    alphabets: tuple[str, ...]
    alphabet_of: Tensor
    drawers: Tensor
    source: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                "ImageStore.images must be a uint8 tensor [classes, instances, H, W]; "
                f"got dtype={self.images.dtype}, shape={tuple(self.images.shape)}"
            )
        c, n = self.images.shape[:2]
        if len(self.class_names) != c:
            raise ValueError(f"class_names has {len(self.class_names)} entries for {c} classes")
        if tuple(self.alphabet_of.shape) != (c,):
            raise ValueError(
                f"alphabet_of must have shape [{c}], got {tuple(self.alphabet_of.shape)}"
            )
        if tuple(self.drawers.shape) != (c, n):
            raise ValueError(f"drawers must have shape [{c}, {n}], got {tuple(self.drawers.shape)}")

    @property
    def num_classes(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_instances(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return self.num_classes

    def __repr__(self) -> str:
        return (
            f"ImageStore(classes={self.num_classes}, instances={self.num_instances}, "
            f"image_size={self.image_size}, alphabets={len(self.alphabets)}, "
            f"source={self.source!r})"
        )

    def index_of(self, names: Sequence[str]) -> Tensor:
        """Class indices of ``names`` (``"Alphabet/characterNN"``); unknown names are an error."""
        lookup = {name: i for i, name in enumerate(self.class_names)}
        missing = [n for n in names if n not in lookup]
        if missing:
            raise KeyError(
                f"{len(missing)} class name(s) are not in this store ({self.source}), "
                f"e.g. {missing[:3]}"
            )
        return torch.tensor([lookup[n] for n in names], dtype=torch.long)

    def subset(self, classes: Sequence[int] | Tensor) -> ImageStore:
        """A store with only ``classes`` (indices), in the given order; alphabets are kept."""
        idx = torch.as_tensor(classes, dtype=torch.long)
        return ImageStore(
            images=self.images[idx],
            class_names=tuple(self.class_names[int(i)] for i in idx),
            alphabets=self.alphabets,
            alphabet_of=self.alphabet_of[idx],
            drawers=self.drawers[idx],
            source=self.source,
        )

    def to(self, device: torch.device | str) -> ImageStore:
        """The same store with its images on ``device`` (metadata stays on the CPU)."""
        return ImageStore(
            images=self.images.to(device),
            class_names=self.class_names,
            alphabets=self.alphabets,
            alphabet_of=self.alphabet_of,
            drawers=self.drawers,
            source=self.source,
        )
