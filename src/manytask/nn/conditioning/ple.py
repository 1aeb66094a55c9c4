"""Customized Gate Control (CGC) and Progressive Layered Extraction (PLE)
(Tang, Liu, Zhao & Gong, RecSys 2020).

**CGC** (section 4.2) separates shared experts from task-specific ones: task ``k`` mixes its
own ``m_k`` experts and the ``m_s`` shared experts with a softmax gate on the input (eq. 1-3):
``g^k(x) = w^k(x) S^k(x)``, ``w^k(x) = softmax(W_g^k x)``,
``S^k(x) = [E_(k,1), ..., E_(k,m_k), E_(s,1), ..., E_(s,m_s)]``, ``y^k = t^k(g^k(x))``.

**PLE** (section 4.3) stacks ``L`` extraction levels. At level ``j`` task ``k``'s gate reads
the output of task ``k``'s gate at level ``j-1`` and mixes task ``k``'s and the shared experts
(eq. 4): ``g^{k,j}(x) = w^{k,j}(g^{k,j-1}(x)) S^{k,j}(x)``; below the last level a *shared*
gate mixes every expert of the level (all tasks' and the shared ones) to feed the next
level's shared experts. The last level has only task gates, whose outputs go to the towers.
With one level PLE is CGC. Experts of level 1 are copies of the backbone; experts of higher
levels are ``Linear -> ReLU`` layers of width ``upper_width`` on the previous level's output.
Gates list the task's own experts first, then the shared ones.

Parameter split by reach: below the last level, task experts feed the shared gate, so every
task reaches them (``theta_sh``). ``theta_k``: task ``k``'s experts and gate at the last level,
its gate at the level before (it feeds only task ``k``'s last-level experts and gate), and
its tower.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
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

__all__ = ["CGC", "PLE", "ExtractionLevel"]


def _mix(logits: Tensor, experts: Tensor) -> Tensor:
    """``sum_e softmax(logits)_e experts[:, e]``: ``[B, E], [B, E, F] -> [B, F]``."""
    return (torch.softmax(logits, dim=1).unsqueeze(-1) * experts).sum(1)


class ExtractionLevel(nn.Module):
    """One PLE level: shared experts, per-task experts, per-task gates, an optional shared gate.

    Args:
        make_expert: builds one expert ``[B, ...] -> [B, F]``.
        num_tasks: ``K``.
        shared_experts: ``m_s``.
        task_experts: ``m_k`` (the same for every task).
        gate_in: size of the (flattened) input the gates read.
        shared_gate: whether the level has a shared gate (every level but the last).
    """

    def __init__(
        self,
        make_expert: Callable[[], nn.Module],
        num_tasks: int,
        shared_experts: int,
        task_experts: int,
        gate_in: int,
        shared_gate: bool,
    ) -> None:
        super().__init__()
        self.shared_experts = nn.ModuleList(make_expert() for _ in range(shared_experts))
        self.task_experts = nn.ModuleList(
            nn.ModuleList(make_expert() for _ in range(task_experts)) for _ in range(num_tasks)
        )
        self.task_gates = nn.ModuleList(
            nn.Linear(gate_in, task_experts + shared_experts, bias=False) for _ in range(num_tasks)
        )
        self.shared_gate = (
            nn.Linear(gate_in, num_tasks * task_experts + shared_experts, bias=False)
            if shared_gate
            else None
        )

    def shared_outputs(self, h: Tensor) -> list[Tensor]:
        """Every shared expert on ``h``: ``m_s`` tensors ``[B, F]``."""
        return [expert(h) for expert in self.shared_experts]

    def task_outputs(self, task: int, h: Tensor) -> list[Tensor]:
        """Task ``task``'s experts on ``h``: ``m_k`` tensors ``[B, F]``."""
        return [expert(h) for expert in cast(nn.ModuleList, self.task_experts[task])]

    def task_gate(self, task: int, gate_input: Tensor) -> Tensor:
        """Logits of ``w^{k,j}`` (task ``k``'s experts first, then the shared ones)."""
        return cast(nn.Linear, self.task_gates[task])(torch.flatten(gate_input, 1))

    def shared_gate_logits(self, gate_input: Tensor) -> Tensor:
        """Logits of the shared gate (every task's experts in task order, then the shared)."""
        if self.shared_gate is None:
            raise ValueError("the last PLE level has no shared gate")
        return self.shared_gate(torch.flatten(gate_input, 1))

    def task_expert_parameters(self, task: int) -> list[nn.Parameter]:
        return list(self.task_experts[task].parameters())

    def task_gate_parameters(self, task: int) -> list[nn.Parameter]:
        return list(self.task_gates[task].parameters())


def _level_one_expert(backbone: BackboneFactory, shape: tuple[int, ...]) -> nn.Module:
    return Trunk(backbone(), shape)


def _upper_expert(in_features: int, width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_features, width), nn.ReLU())


class PLE(MultiTaskModel):
    """Progressive Layered Extraction: ``levels`` stacked CGC levels with shared gates between.

    Args:
        backbone: a factory building one level-1 expert.
        input_shape: per-example input shape.
        num_outputs: output size of every task.
        levels: number of extraction levels ``L`` (``1`` = CGC).
        shared_experts: shared experts per level ``m_s``.
        task_experts: experts per task per level ``m_k``.
        upper_width: width of the experts above level 1 (default: the backbone's output size).
        tower_hidden: hidden widths of each task's tower.

    Example:
        >>> from functools import partial
        >>> from manytask.nn.backbones import MLP
        >>> model = PLE(partial(MLP, 6, hidden=(8,)), (6,), (1, 1), levels=2, upper_width=4)
        >>> model(torch.zeros(3, 6), 1).shape
        torch.Size([3, 1])
    """

    shares_input_pass = True

    def __init__(
        self,
        backbone: BackboneFactory,
        input_shape: Sequence[int],
        num_outputs: Sequence[int],
        *,
        levels: int = 2,
        shared_experts: int = 1,
        task_experts: int = 1,
        upper_width: int | None = None,
        tower_hidden: Sequence[int] = (),
    ) -> None:
        super().__init__(input_shape, num_outputs)
        name = type(self).__name__
        self.num_levels = check_positive(name, "levels", levels)
        for arg, value in (("shared_experts", shared_experts), ("task_experts", task_experts)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: {arg} must be an int >= 0; got {value!r}")
        if shared_experts + task_experts < 1:
            raise ValueError(
                f"{name}: every task gate needs an expert: shared_experts + task_experts must "
                f"be >= 1; got {shared_experts} + {task_experts}"
            )
        self.shared_experts = shared_experts
        self.task_experts = task_experts
        self.tower_hidden = check_hidden(name, "tower_hidden", tower_hidden)
        shape = self.input_shape
        width = Trunk(backbone(), shape).out_features  # probe the expert size once
        if upper_width is not None:
            check_positive(name, "upper_width", upper_width)
        self.upper_width = upper_width if upper_width is not None else width
        level_list = []
        gate_in = math.prod(shape)
        for j in range(self.num_levels):
            if j == 0:
                make: Callable[[], nn.Module] = partial(_level_one_expert, backbone, shape)
            else:
                make = partial(_upper_expert, width, self.upper_width)
                gate_in, width = width, self.upper_width
            level_list.append(
                ExtractionLevel(
                    make,
                    self.num_tasks,
                    shared_experts,
                    task_experts,
                    gate_in,
                    shared_gate=j < self.num_levels - 1,
                )
            )
        self.levels = nn.ModuleList(level_list)
        self.towers = TaskHeads(width, self.num_outputs, "per_task", tower_hidden)
        self._check_split()

    def level(self, j: int) -> ExtractionLevel:
        """Extraction level ``j`` (0-based; ``-1`` the last)."""
        return cast(ExtractionLevel, self.levels[j])

    def _forward_requests(self, x: Tensor, requests: Sequence[Request]) -> list[Tensor]:
        k_tasks = self.num_tasks
        q_shared, q_tasks = x, [x] * k_tasks
        for j in range(self.num_levels - 1):
            level = self.level(j)
            shared = level.shared_outputs(q_shared)
            own = [level.task_outputs(k, q_tasks[k]) for k in range(k_tasks)]
            new_tasks = [
                _mix(level.task_gate(k, q_tasks[k]), torch.stack(own[k] + shared, 1))
                for k in range(k_tasks)
            ]
            every = [h for outs in own for h in outs] + shared
            q_shared = _mix(level.shared_gate_logits(q_shared), torch.stack(every, 1))
            q_tasks = new_tasks
        last = self.level(-1)
        shared = last.shared_outputs(q_shared)
        outs = []
        for t, s, e in requests:
            q = q_tasks[t][s:e]
            experts = last.task_outputs(t, q) + [h[s:e] for h in shared]
            mixed = _mix(last.task_gate(t, q), torch.stack(experts, 1))
            outs.append(self.towers(mixed, t))
        return outs

    def _task_parameter_list(self, task: int) -> list[nn.Parameter]:
        last = self.level(-1)
        params = last.task_expert_parameters(task) + last.task_gate_parameters(task)
        if self.num_levels > 1:
            params += self.level(-2).task_gate_parameters(task)
        return params + self.towers.task_parameters(task)

    def extra_repr(self) -> str:
        return (
            f"input_shape={self.input_shape}, num_outputs={self.num_outputs}, "
            f"levels={self.num_levels}, shared_experts={self.shared_experts}, "
            f"task_experts={self.task_experts}, upper_width={self.upper_width}, "
            f"tower_hidden={self.tower_hidden}"
        )


class CGC(PLE):
    """Customized Gate Control: PLE with one extraction level.

    Args:
        backbone: a factory building one expert.
        input_shape: per-example input shape.
        num_outputs: output size of every task.
        shared_experts: shared experts ``m_s``.
        task_experts: experts per task ``m_k``.
        tower_hidden: hidden widths of each task's tower.

    Example:
        >>> from functools import partial
        >>> from manytask.nn.backbones import MLP
        >>> model = CGC(partial(MLP, 6, hidden=(8,)), (6,), (2, 1), shared_experts=2)
        >>> model(torch.zeros(3, 6), 0).shape
        torch.Size([3, 2])
    """

    def __init__(
        self,
        backbone: BackboneFactory,
        input_shape: Sequence[int],
        num_outputs: Sequence[int],
        *,
        shared_experts: int = 1,
        task_experts: int = 1,
        tower_hidden: Sequence[int] = (),
    ) -> None:
        super().__init__(
            backbone,
            input_shape,
            num_outputs,
            levels=1,
            shared_experts=shared_experts,
            task_experts=task_experts,
            tower_hidden=tower_hidden,
        )

    def extra_repr(self) -> str:
        return (
            f"input_shape={self.input_shape}, num_outputs={self.num_outputs}, "
            f"shared_experts={self.shared_experts}, task_experts={self.task_experts}, "
            f"tower_hidden={self.tower_hidden}"
        )
