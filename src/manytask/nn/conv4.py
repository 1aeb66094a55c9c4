"""The four-block convolutional encoder used across few-shot learning papers.

Vinyals et al. (2016), Snell et al. (2017) and Finn et al. (2017) all use it: four blocks of
``3x3 conv (64 filters) -> batch norm -> ReLU -> 2x2 max-pool``. A 28x28 input gives a
64-dimensional embedding (28 -> 14 -> 7 -> 3 -> 1); an 84x84 input gives 1600.

Relation Networks (Sung et al. 2018, Figure 2) keep feature maps instead: their embedding
module is the same four blocks with max-pooling in the first two only, and it is not
flattened, because the relation module convolves the maps further. ``pool``, ``padding`` and
``flatten`` express that variant (and others) with the same class, so every encoder stays one
registered ``conv4``:

>>> Conv4(pool=(True, True, False, False), padding=(0, 0, 1, 1), flatten=False)(
...     torch.zeros(2, 1, 28, 28)).shape
torch.Size([2, 64, 5, 5])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor, nn

__all__ = ["Conv4", "conv_block"]

_BLOCKS = 4
Norm = Literal["batch", "group", "none"]
_NORMS: tuple[str, ...] = get_args(Norm)


def _norm_layer(norm: str, channels: int) -> list[nn.Module]:
    if norm == "batch":
        return [nn.BatchNorm2d(channels)]
    if norm == "group":
        return [nn.GroupNorm(math.gcd(8, channels), channels)]
    return []


def conv_block(
    in_channels: int,
    out_channels: int,
    *,
    padding: int = 1,
    pool: bool = True,
    norm: Norm = "batch",
) -> nn.Sequential:
    """One ``conv3x3 -> BatchNorm -> ReLU [-> MaxPool2d(2)]`` block.

    Args:
        in_channels: input channels.
        out_channels: filters of the convolution.
        padding: zero padding of the convolution (1 keeps the size, 0 shrinks it by 2).
        pool: end with a 2x2 max-pooling (halves the size, rounding down).
        norm: ``"batch"`` (BatchNorm2d, the papers'), ``"group"`` (GroupNorm with
            ``gcd(8, out_channels)`` groups: per-example statistics) or ``"none"``.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=padding),
        *_norm_layer(norm, out_channels),
        # In place only after batch norm: with group norm or none, the conv / norm output must
        # stay intact for TaskCapture's one-backward per-task gradients (it refuses outputs
        # modified in place); the extra activation is the price.
        nn.ReLU(inplace=norm == "batch"),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def _per_block(name: str, value: Sequence[object], kind: type) -> tuple:
    items = tuple(value)
    if len(items) != _BLOCKS or not all(
        isinstance(v, kind) and (kind is bool or not isinstance(v, bool)) for v in items
    ):
        raise ValueError(
            f"Conv4: {name} must list {_BLOCKS} {kind.__name__}s, one per block; got {value!r}"
        )
    return items


class Conv4(nn.Module):
    """Four conv blocks: ``[B, C, H, W] -> [B, hidden*H'*W']`` (or maps ``[B, hidden, H', W']``).

    With the defaults every block pools and keeps its size before pooling, so
    ``H' = H // 16`` and a 28x28 image gives a 64-dimensional embedding.

    Args:
        in_channels: image channels (1 for Omniglot).
        hidden: filters per block (64 in the papers).
        pool: per block, whether it ends with 2x2 max-pooling. Relation Networks pool in the
            first two blocks only: ``(True, True, False, False)``.
        padding: per block, the zero padding of its 3x3 convolution (1 keeps the size, 0
            shrinks it by 2). The Relation Network authors' Omniglot code uses
            ``(0, 0, 1, 1)``: 28 -> 26 -> 13 -> 11 -> 5 -> 5 -> 5, maps of 5x5.
        flatten: return ``[B, hidden * H' * W']`` (True) or the feature maps
            ``[B, hidden, H', W']`` (False), for learners that compare maps.
        norm: the normalisation of every block: ``"batch"`` (the papers' batch norm),
            ``"group"`` (GroupNorm, ``gcd(8, hidden)`` groups) or ``"none"``. Batch norm in
            training mode normalises over the whole batch, which couples the examples of
            different tasks in a multi-task batch; group norm and none are per example, so a
            multi-task gradient method gets every task's gradient from one backward pass
            (:class:`manytask.mtl.jacobian.TaskCapture`).

    Example:
        >>> enc = Conv4(in_channels=1, hidden=64)
        >>> enc(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 64])
        >>> enc.output_size(28, 28)
        (1, 1)
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden: int = 64,
        pool: Sequence[bool] = (True, True, True, True),
        padding: Sequence[int] = (1, 1, 1, 1),
        flatten: bool = True,
        norm: Norm = "batch",
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"Conv4: in_channels must be >= 1, got {in_channels}")
        if hidden < 1:
            raise ValueError(f"Conv4: hidden must be >= 1, got {hidden}")
        self.pool: tuple[bool, ...] = _per_block("pool", pool, bool)
        self.padding: tuple[int, ...] = _per_block("padding", padding, int)
        if any(p < 0 for p in self.padding):
            raise ValueError(f"Conv4: padding must be >= 0 in every block; got {padding!r}")
        if not isinstance(flatten, bool):
            raise ValueError(f"Conv4: flatten must be True or False; got {flatten!r}")
        if norm not in _NORMS:
            raise ValueError(f"Conv4: norm must be one of {_NORMS}; got {norm!r}")
        self.norm = norm
        self.in_channels = in_channels
        self.hidden = hidden
        self.flatten = flatten
        self.blocks = nn.Sequential(
            *(
                conv_block(
                    in_channels if i == 0 else hidden, hidden, padding=pad, pool=pool_, norm=norm
                )
                for i, (pad, pool_) in enumerate(zip(self.padding, self.pool, strict=True))
            )
        )

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The spatial size ``(H', W')`` of the output maps for ``height x width`` inputs."""
        size = [height, width]
        for pad, pool in zip(self.padding, self.pool, strict=True):
            size = [s + 2 * pad - 2 for s in size]
            if pool:
                size = [s // 2 for s in size]
        return size[0], size[1]

    def min_input_size(self) -> int:
        """The smallest square input side whose output maps are at least 1x1."""
        side = 1
        while min(self.output_size(side, side)) < 1:
            side += 1
        return side

    def stages(self) -> list[nn.Module]:
        """The four blocks; ``forward(x) == flatten(blocks(x))`` (multi-task models cut here)."""
        return list(self.blocks)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"Conv4 expects images [B, {self.in_channels}, H, W], got {tuple(x.shape)}"
            )
        if min(self.output_size(x.shape[-2], x.shape[-1])) < 1:
            side = self.min_input_size()
            raise ValueError(
                f"Conv4 needs images of at least {side}x{side} with pool={self.pool} and "
                f"padding={self.padding}, got {tuple(x.shape[-2:])}"
            )
        maps = self.blocks(x)
        return torch.flatten(maps, start_dim=1) if self.flatten else maps

    def extra_repr(self) -> str:
        text = f"in_channels={self.in_channels}, hidden={self.hidden}"
        if self.pool != (True,) * _BLOCKS:
            text += f", pool={self.pool}"
        if self.padding != (1,) * _BLOCKS:
            text += f", padding={self.padding}"
        if not self.flatten:
            text += ", flatten=False"
        if self.norm != "batch":
            text += f", norm={self.norm!r}"
        return text
