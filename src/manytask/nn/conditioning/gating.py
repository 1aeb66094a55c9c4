"""Multiplicative gating with one-hot ``z_i``: independent networks (CS330, multi-task lecture).

The lecture's extreme of *no* sharing. Take a network whose hidden units are split into ``K``
blocks and gate block ``k`` of every layer by ``z_k``: ``h_l = (z ⊗ 1) * sigma(W_l h_{l-1})``.
With a one-hot ``z = e_i`` only block ``i`` is ever non-zero, so the weights between
different blocks multiply zeros: they change no output and get exactly zero gradient. What is
left is ``K`` block-diagonal columns, and the model is ``y = sum_k z_k f_k(x)``: with
``z = e_i`` exactly network ``f_i``, i.e. ``K`` independent networks, ``theta_sh`` empty.

We build the columns directly (``K`` copies of the backbone, each with its own head) rather
than the dead off-diagonal blocks. ``model(x, i)`` runs column ``i`` only; a gate batch
``z [B, K]`` runs column ``k`` on the rows with ``z_k != 0`` and sums ``z_k f_k(x)``
(outputs padded with zeros to ``max(num_outputs)``). With one-hot rows every row passes
through its own column only, so the model is independent networks also in its batch-norm
statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from manytask.nn.backbones import BackboneFactory, Trunk
from manytask.nn.conditioning.base import MultiTaskModel, Request, TaskHeads, check_hidden

__all__ = ["MultiplicativeGating"]


class MultiplicativeGating(MultiTaskModel):
    """``y = sum_k z_k f_k(x)``: one full network per task, gated by ``z``.

    Args:
        backbone: a factory building the backbone (called once per task).
        input_shape: per-example input shape.
        num_outputs: output size of every task.
        head_hidden: hidden widths of each column's head tower.

    Example:
        >>> from functools import partial
        >>> from manytask.nn.backbones import MLP
        >>> model = MultiplicativeGating(partial(MLP, 6, hidden=(16,)), (6,), (3, 2))
        >>> model(torch.zeros(4, 6), 1).shape, model.parameter_counts()
        (torch.Size([4, 2]), {'shared': 0, 'per_task': [163, 146]})
        >>> model(torch.zeros(4, 6), torch.eye(2)[[0, 1, 1, 0]]).shape  # one-hot gates
        torch.Size([4, 3])
    """

    reads_descriptors = True
    shares_input_pass = True

    def __init__(
        self,
        backbone: BackboneFactory,
        input_shape: Sequence[int],
        num_outputs: Sequence[int],
        *,
        head_hidden: Sequence[int] = (),
    ) -> None:
        super().__init__(input_shape, num_outputs)
        self.head_hidden = check_hidden(type(self).__name__, "head_hidden", head_hidden)
        self.columns = nn.ModuleList(Trunk(backbone(), input_shape) for _ in range(self.num_tasks))
        self.heads = TaskHeads(
            self.column(0).out_features, self.num_outputs, "per_task", head_hidden
        )
        self._check_split()

    def column(self, task: int) -> Trunk:
        """Task ``task``'s network (a copy of the backbone)."""
        return cast(Trunk, self.columns[task])

    def _forward_requests(self, x: Tensor, requests: Sequence[Request]) -> list[Tensor]:
        return [self.heads(self.column(t)(x[s:e]), t) for t, s, e in requests]

    def _forward_descriptors(self, x: Tensor, z: Tensor) -> Tensor:
        if z.shape[1] != self.num_tasks:
            raise ValueError(
                f"MultiplicativeGating gates {self.num_tasks} columns: z must be [B, "
                f"{self.num_tasks}] (one-hot rows give independent networks); got "
                f"{tuple(z.shape)}"
            )
        width = max(self.num_outputs)
        out = x.new_zeros(x.shape[0], width)
        for k in range(self.num_tasks):
            rows = torch.nonzero(z[:, k] != 0).squeeze(1)
            if rows.numel() == 0:
                continue
            y = self.heads(self.column(k)(x[rows]), k)
            y = F.pad(y, (0, width - y.shape[1])) * z[rows, k : k + 1].to(y.dtype)
            out = out.index_add(0, rows, y)
        return out

    def _task_parameter_list(self, task: int) -> list[nn.Parameter]:
        return [*self.columns[task].parameters(), *self.heads.task_parameters(task)]

    def extra_repr(self) -> str:
        return (
            f"input_shape={self.input_shape}, num_outputs={self.num_outputs}, "
            f"head_hidden={self.head_hidden}"
        )
