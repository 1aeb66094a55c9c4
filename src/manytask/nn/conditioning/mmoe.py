"""Multi-gate Mixture-of-Experts, MMoE (Ma, Zhao, Yi, Chen, Hong & Chi, KDD 2018).

``n`` shared experts ``f_1..f_n`` (each a copy of the backbone) and, per task ``k``, a gating
network and a tower (eq. 5-6):
``y_k = h^k(f^k(x))``, ``f^k(x) = sum_i g^k(x)_i f_i(x)``, ``g^k(x) = softmax(W_gk x)``,
with ``W_gk`` an ``[n, d]`` matrix on the (flattened) input. The experts are ``theta_sh``;
gate ``k`` and tower ``k`` are ``theta_k``. With one expert MMoE is the shared-bottom
(multi-head) model; with identical gates it is the one-gate MoE (OMoE) of the paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from manytask.nn.backbones import BackboneFactory, Trunk
from manytask.nn.conditioning.base import (
    MultiTaskModel,
    Request,
    TaskHeads,
    check_hidden,
    check_positive,
)

__all__ = ["MMoE"]


class MMoE(MultiTaskModel):
    """Shared experts mixed by one softmax gate per task, then a tower per task.

    Args:
        backbone: a factory building one expert (called ``num_experts`` times).
        input_shape: per-example input shape.
        num_outputs: output size of every task.
        num_experts: number of experts ``n``.
        tower_hidden: hidden widths of each task's tower (``()`` = a linear layer).

    Example:
        >>> from functools import partial
        >>> from manytask.nn.backbones import MLP
        >>> model = MMoE(partial(MLP, 6, hidden=(16,)), (6,), (1, 1), num_experts=3)
        >>> model(torch.zeros(4, 6), 0).shape
        torch.Size([4, 1])
        >>> model.gate_weights(torch.zeros(4, 6), 1).sum(1)
        tensor([1., 1., 1., 1.], grad_fn=<SumBackward1>)
    """

    shares_input_pass = True

    def __init__(
        self,
        backbone: BackboneFactory,
        input_shape: Sequence[int],
        num_outputs: Sequence[int],
        *,
        num_experts: int = 4,
        tower_hidden: Sequence[int] = (),
    ) -> None:
        super().__init__(input_shape, num_outputs)
        name = type(self).__name__
        self.num_experts = check_positive(name, "num_experts", num_experts)
        self.tower_hidden = check_hidden(name, "tower_hidden", tower_hidden)
        self.experts = nn.ModuleList(Trunk(backbone(), input_shape) for _ in range(num_experts))
        d = math.prod(self.input_shape)
        self.gates = nn.ModuleList(
            nn.Linear(d, num_experts, bias=False) for _ in range(self.num_tasks)
        )
        self.towers = TaskHeads(
            cast(Trunk, self.experts[0]).out_features, self.num_outputs, "per_task", tower_hidden
        )
        self._check_split()

    def gate_weights(self, x: Tensor, task: int) -> Tensor:
        """``g^k(x) = softmax(W_gk x)``: ``[B, *input_shape] -> [B, n]``, rows sum to one."""
        return torch.softmax(self.gates[task](torch.flatten(x, 1)), dim=1)

    def expert_outputs(self, x: Tensor) -> Tensor:
        """``[B, n, F]``: every expert on every row."""
        return torch.stack([expert(x) for expert in self.experts], dim=1)

    def _forward_requests(self, x: Tensor, requests: Sequence[Request]) -> list[Tensor]:
        experts = self.expert_outputs(x)
        outs = []
        for t, s, e in requests:
            g = self.gate_weights(x[s:e], t)
            outs.append(self.towers((g.unsqueeze(-1) * experts[s:e]).sum(1), t))
        return outs

    def _task_parameter_list(self, task: int) -> list[nn.Parameter]:
        return [*self.gates[task].parameters(), *self.towers.task_parameters(task)]

    def extra_repr(self) -> str:
        return (
            f"input_shape={self.input_shape}, num_outputs={self.num_outputs}, "
            f"num_experts={self.num_experts}, tower_hidden={self.tower_hidden}"
        )
