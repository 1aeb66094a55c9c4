"""Fully connected backbones: :class:`MLP` (e.g. the 40-40 network of MAML's sinusoid
regression, Finn et al. 2017, section 5.1) and :class:`Flatten` (raw pixels as features, as the
MANN of the CS330 homework reads 28x28 images)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["MLP", "Flatten", "output_features"]


class MLP(nn.Module):
    """``Linear -> activation`` layers: ``[B, *in_shape] -> [B, hidden[-1]]``.

    Args:
        in_features: input width (inputs are flattened after the batch axis).
        hidden: the width of every hidden layer, e.g. ``[40, 40]``.
        activation: ``"relu"`` or ``"tanh"``.

    Example:
        >>> net = MLP(in_features=1, hidden=[40, 40])
        >>> net(torch.zeros(5, 1)).shape
        torch.Size([5, 40])
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (40, 40),
        activation: Literal["relu", "tanh"] = "relu",
    ) -> None:
        super().__init__()
        if in_features < 1:
            raise ValueError(f"MLP: in_features must be >= 1, got {in_features}")
        widths = [int(h) for h in hidden]
        if not widths or min(widths) < 1:
            raise ValueError(f"MLP: hidden must be a non-empty list of widths >= 1, got {hidden}")
        if activation not in ("relu", "tanh"):
            raise ValueError(f"MLP: activation must be 'relu' or 'tanh', got {activation!r}")
        self.in_features, self.hidden, self.activation = in_features, tuple(widths), activation
        act = nn.ReLU if activation == "relu" else nn.Tanh
        layers: list[nn.Module] = []
        width = in_features
        for h in widths:
            layers += [nn.Linear(width, h), act()]
            width = h
        self.layers = nn.Sequential(*layers)
        self.out_features = width

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"MLP expects {self.in_features} input features per example, got {x.shape[1]}"
            )
        return self.layers(x)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, hidden={list(self.hidden)}, "
            f"activation={self.activation!r}"
        )


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
def output_features(encoder: nn.Module, in_shape: Sequence[int]) -> int:
    """The width ``D`` of ``encoder``'s output ``[B, D]`` for inputs of ``in_shape``.

    Uses the encoder's ``out_features`` attribute when it has one, else runs two zero inputs
    through it in eval mode (batch-norm statistics are not touched) and restores its mode.

    Example:
        >>> from manytask.nn import Conv4
        >>> output_features(Conv4(hidden=32), (1, 28, 28))
        32
    """
    width = getattr(encoder, "out_features", None)
    if isinstance(width, int):
        return width
    was_training = encoder.training
    encoder.eval()
    try:
        param = next(encoder.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        out = encoder(torch.zeros(2, *in_shape, device=device))
    finally:
        encoder.train(was_training)
    if out.dim() != 2:
        raise ValueError(f"an encoder must return [B, D], got {tuple(out.shape)}")
    return int(out.shape[1])
