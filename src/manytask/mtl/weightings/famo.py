"""FAMO: fast adaptive multitask optimisation, one backward pass per step.

Liu, Liu, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023,
Algorithm 1. FAMO keeps logits ``xi [K]``, ``z = softmax(xi)``, and descends
``sum_i z_i log(L_i - L_i*)`` (``L_i* = 0``, the official default) normalised by
``c = (sum_i z_i / L_i)^-1`` (eq. 6), so the model's gradient is ``sum_i w_i grad L_i`` with

    w_i = c z_i / L_i.

After the optimiser step, the same batch's losses ``L'`` tell how much each task's log-loss
fell, ``delta_i = log L_i - log L'_i``, and the logits move by an Adam step (learning rate
``lr``, weight decay ``gamma``) along ``grad_xi = J_softmax(xi)^T delta`` (eq. 8-9), which
lowers the weight of tasks that improved most. Cost: one backward pass and one extra forward
(the losses after the step), against ``K`` backward passes for the gradient methods.

State: the logits with their Adam moments, and the step's losses before the step.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from torch import Tensor

from manytask.mtl.base import LossWeighting, SharedModel, State, StepInfo
from manytask.mtl.weightings._adam import adam_init, adam_step
from manytask.typed import Range

__all__ = ["FAMO"]

_EPS = 1e-8


class FAMO(LossWeighting):
    """FAMO (Liu et al. 2023); reads the losses after the step (``needs_losses_after_step``).

    Args:
        lr: Adam learning rate of the logits (0.025 in the paper's code).
        gamma: weight decay of the logits (0.001 in the paper's code).

    Example:
        >>> m = FAMO()
        >>> state, info = m.init(2), StepInfo.all_tasks(2)
        >>> w, state = m.weights(torch.tensor([2.0, 0.5]), state, info)
        >>> [round(x, 6) for x in w.tolist()]        # c z_i / L_i with z = (1/2, 1/2), c = 0.8
        [0.2, 0.8]
        >>> state = m.after_step(torch.tensor([1.0, 0.5]), state, info)   # task 0 improved
        >>> state["logits"]["value"][0].item() < state["logits"]["value"][1].item()
        True
    """

    name = "famo"
    needs_losses_after_step = True

    def __init__(
        self,
        lr: Annotated[float, Range(min=0, open=True)] = 0.025,
        gamma: Annotated[float, Range(min=0)] = 0.001,
    ) -> None:
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
            raise ValueError(f"famo: lr must be a number > 0; got {lr!r}")
        if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not gamma >= 0:
            raise ValueError(f"famo: gamma must be a number >= 0; got {gamma!r}")
        self.lr = float(lr)
        self.gamma = float(gamma)

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, "gamma": self.gamma}

    def init(self, num_tasks: int) -> State:
        super().init(num_tasks)
        return {
            "logits": adam_init(torch.zeros(num_tasks)),
            "before": torch.full((num_tasks,), float("nan"), dtype=torch.float64),
        }

    def _z(self, state: State, idx: Tensor) -> Tensor:
        return torch.softmax(state["logits"]["value"].to("cpu", torch.float64)[idx], 0)

    def weights(self, losses: Tensor, state: State, info: StepInfo) -> tuple[Tensor, State]:
        idx = info.tasks.to("cpu", torch.long)
        loss = losses.to("cpu", torch.float64)
        if bool((loss < 0).any()):
            raise ValueError(
                "famo: FAMO takes the log of every loss and needs them >= 0; got "
                f"{loss.tolist()} (shift a task's loss by its known minimum)"
            )
        z = self._z(state, idx)
        d = loss + _EPS
        c = 1.0 / (z / d).sum()
        before = state["before"].to("cpu", torch.float64).clone()
        before[idx] = loss
        return (c * z / d).to(losses), {**state, "before": before}

    def backward(
        self, losses: Tensor, model: SharedModel, state: State, info: StepInfo
    ) -> tuple[dict[str, Tensor], State]:
        logs, new_state = super().backward(losses, model, state, info)
        # The objective FAMO descends: sum_i (z_i / c) log L_i (its gradient is sum_i w_i grad L_i).
        idx = info.tasks.to("cpu", torch.long)
        d = losses.detach().to("cpu", torch.float64) + _EPS
        z = self._z(state, idx)
        c = 1.0 / (z / d).sum()
        logs["objective"] = ((z / c) * d.log()).sum().to(logs["objective"])
        return logs, new_state

    def after_step(self, losses: Tensor, state: State, info: StepInfo) -> State:
        idx = info.tasks.to("cpu", torch.long)
        before = state["before"].to("cpu", torch.float64)[idx]
        if bool(torch.isnan(before).any()):
            raise ValueError("famo: after_step() before weights() for the same tasks")
        after = losses.detach().to("cpu", torch.float64)
        delta = (before + _EPS).log() - (after + _EPS).log()
        z = self._z(state, idx)
        grad = z * (delta - (z * delta).sum())  # J_softmax^T delta
        new = adam_step(state["logits"], grad, idx, lr=self.lr, weight_decay=self.gamma)
        return {**state, "logits": new}
