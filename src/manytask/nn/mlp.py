"""Encoders without stages: :class:`Flatten` (raw pixels as features, as the MANN of the CS330
homework reads 28x28 images); :func:`output_features`, the width of any encoder's output, and
:func:`output_shape`, the per-example shape of its output (feature maps included).
The MLP lives in :mod:`manytask.nn.backbones`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Flatten", "output_features", "output_shape"]


class Flatten(nn.Module):
    """No parameters: ``[B, *in_shape] -> [B, prod(in_shape)]`` (raw inputs as features).

    Args:
        in_shape: the per-example input shape, e.g. ``(1, 28, 28)``.

    Example:
        >>> Flatten((1, 28, 28))(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 784])
    """

    def __init__(self, in_shape: Sequence[int]) -> None:
        super().__init__()
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_features = math.prod(self.in_shape)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"Flatten expects inputs [B, {self.in_shape}], got {tuple(x.shape)}")
        return x.flatten(1)

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}"


@torch.no_grad()
def output_shape(encoder: nn.Module, in_shape: Sequence[int]) -> tuple[int, ...]:
    """The per-example shape of ``encoder``'s output for inputs of ``in_shape``.

    Runs two zero inputs through it in eval mode (batch-norm statistics are not touched) and
    restores its mode. ``(D,)`` for an embedding, ``(C, H, W)`` for feature maps.

    Example:
        >>> from manytask.nn import Conv4
        >>> maps = Conv4(hidden=8, pool=(True, True, False, False), flatten=False)
        >>> output_shape(maps, (1, 28, 28))
        (8, 7, 7)
    """
    was_training = encoder.training
    encoder.eval()
    try:
        param = next(encoder.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        out = encoder(torch.zeros(2, *in_shape, device=device))
    finally:
        encoder.train(was_training)
    return tuple(int(s) for s in out.shape[1:])


def output_features(encoder: nn.Module, in_shape: Sequence[int]) -> int:
    """The width ``D`` of ``encoder``'s output ``[B, D]`` for inputs of ``in_shape``.

    Uses the encoder's ``out_features`` attribute when it has one, else
    :func:`output_shape` (zero inputs in eval mode; batch-norm statistics are not touched).

    Example:
        >>> from manytask.nn import Conv4
        >>> output_features(Conv4(hidden=32), (1, 28, 28))
        32
    """
    width = getattr(encoder, "out_features", None)
    if isinstance(width, int):
        return width
    shape = output_shape(encoder, in_shape)
    if len(shape) != 1:
        raise ValueError(f"an encoder must return [B, D], got [B, {', '.join(map(str, shape))}]")
    return shape[0]
