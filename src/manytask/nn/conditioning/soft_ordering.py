"""Soft layer ordering (Meyerson & Miikkulainen, ICLR 2018, "Beyond Shared Hierarchies").

Instead of stacking shared layers in one fixed (parallel) order for every task, a set of
``D`` shared layers ``F_1..F_D`` is applied at every depth as a task-specific soft mixture:
``y_0 = E_t(x)``, ``y_d = sum_j s_(t,d,j) F_j(y_{d-1})`` for ``d = 1..D``, ``y^_t = D_t(y_D)``,
with ``s_(t,d,:) = softmax`` of learned task-specific scalars (so ``s >= 0`` and
``sum_j s_(t,d,j) = 1``). ``E_t`` is a task-specific encoder, ``D_t`` a task-specific
decoder (head).

From a backbone with stages ``S_1..S_L``: ``S_1`` is the encoder (one copy per task, or shared
with ``encoder="shared"``) and ``S_2..S_L`` are the shared layers, so they must keep the
channel count (Conv4's blocks 2-4 and an MLP's equal-width hidden layers do; a max-pool inside
a block is fine, since every depth applies the same number of them). The scalars start at
zero: every depth starts as the uniform mixture.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast, get_args

import torch
from torch import Tensor, nn

from manytask.nn.backbones import BackboneFactory, Trunk, stages_of
from manytask.nn.conditioning.base import (
    MultiTaskModel,
    Request,
    TaskHeads,
    check_hidden,
    dry_run,
)

__all__ = ["OrderScalars", "SoftOrdering"]

EncoderMode = Literal["per_task", "shared"]
_ENCODER_MODES: tuple[str, ...] = get_args(EncoderMode)


class OrderScalars(nn.Module):
    """Task ``t``'s scalars ``[D, D]``: row ``d`` holds the logits of ``s_(t,d,:)``.

    Example:
        >>> OrderScalars(3).weights().sum(1)
        tensor([1., 1., 1.], grad_fn=<SumBackward1>)
    """

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.depth = depth
        self.logits = nn.Parameter(torch.empty(depth, depth))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Deterministic: zeros (the uniform mixture at every depth)."""
        with torch.no_grad():
            self.logits.zero_()

    def weights(self) -> Tensor:
        """``s_(t,d,j)``: ``[D, D]``, rows sum to one."""
        return torch.softmax(self.logits, dim=1)

    def extra_repr(self) -> str:
        return f"depth={self.depth}"


class SoftOrdering(MultiTaskModel):
    """Shared layers applied at every depth in a task-specific soft order.

    Args:
        backbone: a factory building the backbone (its first stage is the encoder, the
            others the shared layers; at least two stages).
        input_shape: per-example input shape.
        num_outputs: output size of every task.
        encoder: ``"per_task"`` (the paper's ``E_t``) or ``"shared"``.
        head_hidden: hidden widths of each task's decoder tower.

    Example:
        >>> from functools import partial
        >>> from manytask.nn.backbones import MLP
        >>> model = SoftOrdering(partial(MLP, 6, hidden=(8, 8, 8)), (6,), (3, 2))
        >>> model(torch.zeros(4, 6), 1).shape
        torch.Size([4, 2])
        >>> model.order_weights(0).shape  # [depth, shared layers]
        torch.Size([2, 2])
    """

    def __init__(
        self,
        backbone: BackboneFactory,
        input_shape: Sequence[int],
        num_outputs: Sequence[int],
        *,
        encoder: EncoderMode = "per_task",
        head_hidden: Sequence[int] = (),
    ) -> None:
        super().__init__(input_shape, num_outputs)
        name = type(self).__name__
        if encoder not in _ENCODER_MODES:
            raise ValueError(f"{name}: encoder must be one of {_ENCODER_MODES}; got {encoder!r}")
        self.encoder_mode: EncoderMode = encoder
        self.head_hidden = check_hidden(name, "head_hidden", head_hidden)
        trunk = Trunk(backbone(), input_shape)
        if trunk.depth < 2:
            raise ValueError(
                f"{name} needs a backbone of at least 2 stages (an encoder and shared layers); "
                f"got {trunk.depth}. Use an MLP with several hidden layers or Conv4."
            )
        channels = {trunk.channels(p) for p in range(1, trunk.depth + 1)}
        if len(channels) != 1:
            raise ValueError(
                f"{name}: the shared layers (stages 2..{trunk.depth}) must keep the channel "
                f"count so they can be applied in any order; the stage outputs have "
                f"{[trunk.channels(p) for p in range(1, trunk.depth + 1)]} channels. Use equal "
                "hidden widths."
            )
        self.layers = nn.ModuleList(list(trunk.stages)[1:])
        self.depth = len(self.layers)
        if encoder == "shared":
            self.encoders = nn.ModuleList([trunk.stages[0]])
        else:
            self.encoders = nn.ModuleList(
                [trunk.stages[0]] + [stages_of(backbone())[0] for _ in range(self.num_tasks - 1)]
            )
        self.scalars = nn.ModuleList(OrderScalars(self.depth) for _ in range(self.num_tasks))
        self.heads = TaskHeads(trunk.out_features, self.num_outputs, "per_task", head_hidden)
        self._check_split()
        dry_run(self, lambda x: self._forward_requests(x, [(0, 0, 1)]))

    def order_weights(self, task: int) -> Tensor:
        """``s_(t,d,j)`` of task ``task``: ``[D, D]`` (depth ``d``, layer ``j``)."""
        return cast(OrderScalars, self.scalars[self._check_task(task)]).weights()

    def _encoder(self, task: int) -> nn.Module:
        return self.encoders[0 if self.encoder_mode == "shared" else task]

    def _forward_requests(self, x: Tensor, requests: Sequence[Request]) -> list[Tensor]:
        if self.encoder_mode == "shared":
            h = self.encoders[0](x)
        else:
            h = torch.cat([self._encoder(t)(x[s:e]) for t, s, e in requests])
        ids = torch.cat([torch.full((e - s,), t, dtype=torch.long) for t, s, e in requests]).to(
            h.device
        )
        s_rows = torch.stack([self.order_weights(t) for t in range(self.num_tasks)])[
            ids
        ]  # [B, D, D]
        for d in range(self.depth):
            outs = torch.stack([layer(h) for layer in self.layers], dim=1)  # [B, D, C, ...]
            w = s_rows[:, d].view(*s_rows.shape[:1], self.depth, *([1] * (outs.dim() - 2)))
            h = (w * outs).sum(1)
        h = torch.flatten(h, 1)
        return [self.heads(h[s:e], t) for t, s, e in requests]

    def _task_parameter_list(self, task: int) -> list[nn.Parameter]:
        params = list(self.scalars[task].parameters()) + self.heads.task_parameters(task)
        if self.encoder_mode == "per_task":
            params += list(self.encoders[task].parameters())
        return params

    def extra_repr(self) -> str:
        return (
            f"input_shape={self.input_shape}, num_outputs={self.num_outputs}, "
            f"depth={self.depth}, encoder={self.encoder_mode!r}, head_hidden={self.head_hidden}"
        )
