"""The four-block convolutional encoder used across few-shot learning papers.

Vinyals et al. (2016), Snell et al. (2017) and Finn et al. (2017) all use it: four blocks of
``3x3 conv (64 filters) -> batch norm -> ReLU -> 2x2 max-pool``. A 28x28 input gives a
64-dimensional embedding (28 -> 14 -> 7 -> 3 -> 1); an 84x84 input gives 1600.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Conv4", "conv_block"]


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """One ``conv3x3 -> BatchNorm -> ReLU -> MaxPool2d(2)`` block."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Module):
    """Four conv blocks, flattened: ``[B, C, H, W] -> [B, hidden * (H // 16) * (W // 16)]``.

    Args:
        in_channels: image channels (1 for Omniglot).
        hidden: filters per block (64 in the papers).

    Example:
        >>> enc = Conv4(in_channels=1, hidden=64)
        >>> enc(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 64])
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"Conv4: in_channels must be >= 1, got {in_channels}")
        if hidden < 1:
            raise ValueError(f"Conv4: hidden must be >= 1, got {hidden}")
        self.in_channels = in_channels
        self.hidden = hidden
        self.blocks = nn.Sequential(
            conv_block(in_channels, hidden),
            conv_block(hidden, hidden),
            conv_block(hidden, hidden),
            conv_block(hidden, hidden),
        )

    def stages(self) -> list[nn.Module]:
        """The four blocks; ``forward(x) == flatten(blocks(x))`` (multi-task models cut here)."""
        return list(self.blocks)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"Conv4 expects images [B, {self.in_channels}, H, W], got {tuple(x.shape)}"
            )
        if x.shape[-1] < 16 or x.shape[-2] < 16:
            raise ValueError(f"Conv4 needs images of at least 16x16, got {tuple(x.shape[-2:])}")
        return torch.flatten(self.blocks(x), start_dim=1)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, hidden={self.hidden}"
