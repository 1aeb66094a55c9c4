"""Concatenation-based conditioning, and full sharing (CS330, multi-task lecture).

The descriptor is concatenated to the activation at chosen positions:
``h_p <- [h_p ; z_i]`` (for feature maps, ``z_i`` is tiled over the spatial positions, as
extra constant channels). The layer that reads ``h_p`` gets ``D`` more input columns:
``W [h ; z] + b = W_h h + (W_z z + b)``, so concatenation followed by a linear layer is
additive conditioning of that layer's pre-activation (the lecture's remark that the two are
the same thing); see :mod:`~manytask.nn.conditioning.additive`.

**Full sharing** is the lecture's other extreme: ``z_i`` concatenated to the input only and
everything else, the output layer included, shared; ``theta_i`` is empty and the task is
told apart by ``z_i`` alone (:class:`FullSharing`).

Positions are ``0`` (the network input), ``l`` (the output of stage ``l``, read by stage
``l + 1``), and ``L`` (the flattened trunk features, read by the head).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from manytask.nn.backbones import BackboneFactory, widen_first_layer
from manytask.nn.conditioning.base import DescriptorConditioned, HeadMode, check_positions

__all__ = ["ConcatConditioning", "FullSharing"]


class ConcatConditioning(DescriptorConditioned):
    """Concatenate ``z_i`` to the input and/or hidden activations (shared layers widened).

    Args:
        backbone: a factory building the backbone.
        input_shape: per-example input shape.
        num_outputs: output size of every task.
        descriptors: ``[K, D]`` task descriptors (default one-hot).
        at: positions that get ``z`` concatenated (``0`` = input, ``l`` = after stage ``l``,
            ``L`` = the features before the head).
        heads: ``"shared"`` or ``"per_task"`` output layers.
        head_hidden: hidden widths of the head tower(s).

    Example:
        >>> from functools import partial
        >>> from manytask.nn.backbones import MLP
        >>> model = ConcatConditioning(partial(MLP, 6, hidden=(16, 16)), (6,), (3, 2), at=(0, 2))
        >>> model(torch.zeros(4, 6), 1).shape
        torch.Size([4, 2])
        >>> model(torch.zeros(4, 6), torch.eye(2)[[0, 1, 1, 0]]).shape  # descriptor batch
        torch.Size([4, 3])
        >>> model.parameter_counts()["per_task"]  # everything shared
        [0, 0]
    """

    def __init__(
        self,
        backbone: BackboneFactory,
        input_shape: Sequence[int],
        num_outputs: Sequence[int],
        *,
        descriptors: Tensor | None = None,
        at: Sequence[int] = (0,),
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
        depth = self.trunk.depth
        self.at = check_positions(type(self).__name__, "at", at, depth)
        d = self.descriptor_dim
        for p in self.at:
            if p == depth:
                continue
            self.trunk.stages[p] = widen_first_layer(self.trunk.stages[p], d, self.trunk.shapes[p])
        features = self.trunk.out_features + (d if depth in self.at else 0)
        self._build_heads(features)

    def _condition(self, position: int, h: Tensor, z: Tensor) -> Tensor:
        if position not in self.at:
            return h
        if position == self.trunk.depth:
            return torch.cat([torch.flatten(h, 1), z], dim=1)
        tiled = z.view(*z.shape, *([1] * (h.dim() - 2))).expand(-1, -1, *h.shape[2:])
        return torch.cat([h, tiled.to(h.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, at={self.at}"


class FullSharing(ConcatConditioning):
    """Everything shared but the descriptor input: ``f_theta([x ; z_i])`` with one shared head.

    The extreme of sharing in the lecture (its opposite is :class:`~manytask.nn.conditioning.
    gating.MultiplicativeGating`): ``z_i`` concatenated to the input, every parameter in
    ``theta_sh``, the output layer shared with ``max(num_outputs)`` units (task ``i`` reads
    the first ``num_outputs[i]``).

    Args:
        backbone: a factory building the backbone.
        input_shape: per-example input shape.
        num_outputs: output size of every task.
        descriptors: ``[K, D]`` task descriptors (default one-hot).
        head_hidden: hidden widths of the shared head tower.

    Example:
        >>> from functools import partial
        >>> from manytask.nn.backbones import MLP
        >>> model = FullSharing(partial(MLP, 6, hidden=(16,)), (6,), (3, 3))
        >>> model(torch.zeros(4, 6), 0).shape, model.parameter_counts()
        (torch.Size([4, 3]), {'shared': 195, 'per_task': [0, 0]})
    """

    def __init__(
        self,
        backbone: BackboneFactory,
        input_shape: Sequence[int],
        num_outputs: Sequence[int],
        *,
        descriptors: Tensor | None = None,
        head_hidden: Sequence[int] = (),
    ) -> None:
        super().__init__(
            backbone,
            input_shape,
            num_outputs,
            descriptors=descriptors,
            at=(0,),
            heads="shared",
            head_hidden=head_hidden,
        )
