"""Multiplicative conditioning: descriptor-generated gains (CS330, multi-task lecture).

At every chosen position the descriptor scales each channel:
``h_p <- (1 + W_p z_i) * h_p`` (``W_p`` a shared ``[C_p, D]`` matrix; broadcast over
spatial positions). The ``1 +`` makes a zero descriptor the identity and keeps the gains
near one at initialisation; with a one-hot ``z_i`` the gains are a learned vector per task.
The lecture's point: a multiplicative interaction lets ``z_i`` switch features on and off
per task, which an additive one cannot; gating with one-hot gains over a block-structured
network is the extreme of *no* sharing
(:class:`~manytask.nn.conditioning.gating.MultiplicativeGating`). FiLM adds biases
(:class:`~manytask.nn.conditioning.film.FiLM`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from manytask.nn.backbones import BackboneFactory
from manytask.nn.conditioning.base import (
    DescriptorConditioned,
    HeadMode,
    check_positions,
    per_channel,
)

__all__ = ["MultiplicativeConditioning"]


class MultiplicativeConditioning(DescriptorConditioned):
    """Scale the activations at chosen positions by ``1 + W_p z_i``.

    Args:
        backbone: a factory building the backbone.
        input_shape: per-example input shape.
        num_outputs: output size of every task.
        descriptors: ``[K, D]`` task descriptors (default one-hot).
        at: positions conditioned (``0`` = input, ``l`` = after stage ``l``); default every
            stage output.
        heads: ``"shared"`` or ``"per_task"`` output layers.
        head_hidden: hidden widths of the head tower(s).

    Example:
        >>> import torch
        >>> from functools import partial
        >>> from manytask.nn.backbones import MLP
        >>> model = MultiplicativeConditioning(partial(MLP, 6, hidden=(16,)), (6,), (3, 2))
        >>> model(torch.zeros(4, 6), 1).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        backbone: BackboneFactory,
        input_shape: Sequence[int],
        num_outputs: Sequence[int],
        *,
        descriptors: Tensor | None = None,
        at: Sequence[int] | None = None,
        heads: HeadMode = "shared",
        head_hidden: Sequence[int] = (),
    ) -> None:
        super().__init__(
            backbone,
            input_shape,
            num_outputs,
            descriptors=descriptors,
            heads=heads,
            head_hidden=head_hidden,
        )
        self.at = check_positions(type(self).__name__, "at", at, self.trunk.depth)
        self.gains = nn.ModuleDict(
            {
                str(p): nn.Linear(self.descriptor_dim, self.trunk.channels(p), bias=False)
                for p in self.at
            }
        )
        self._build_heads(self.trunk.out_features)

    def gain(self, position: int, z: Tensor) -> Tensor:
        """The gains ``1 + W_p z`` at ``position``: ``[B, D] -> [B, C_p]``."""
        return 1.0 + self.gains[str(position)](z)

    def _condition(self, position: int, h: Tensor, z: Tensor) -> Tensor:
        if position not in self.at:
            return h
        return h * per_channel(self.gain(position, z), h)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, at={self.at}"
