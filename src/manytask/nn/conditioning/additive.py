"""Additive conditioning (CS330, multi-task lecture).

At every chosen position the descriptor adds a learned, per-channel shift:
``h_p <- h_p + W_p z_i`` (``W_p`` a ``[C_p, D]`` matrix, shared; broadcast over spatial
positions). With a one-hot ``z_i`` the shift is column ``i`` of ``W_p``, a learned bias per
task. Concatenation followed by a linear layer is the same thing,
``W [h ; z] = W_h h + W_z z`` (see :mod:`~manytask.nn.conditioning.concat`); here the shift
acts on stage outputs rather than on a layer's pre-activation.
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

__all__ = ["AdditiveConditioning"]


class AdditiveConditioning(DescriptorConditioned):
    """Add ``W_p z_i`` to the activations at chosen positions.

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
        >>> model = AdditiveConditioning(partial(MLP, 6, hidden=(16, 16)), (6,), (3, 2))
        >>> model(torch.zeros(4, 6), 0).shape
        torch.Size([4, 3])
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
        self.shifts = nn.ModuleDict(
            {
                str(p): nn.Linear(self.descriptor_dim, self.trunk.channels(p), bias=False)
                for p in self.at
            }
        )
        self._build_heads(self.trunk.out_features)

    def _condition(self, position: int, h: Tensor, z: Tensor) -> Tensor:
        if position not in self.at:
            return h
        return h + per_channel(self.shifts[str(position)](z), h)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, at={self.at}"
