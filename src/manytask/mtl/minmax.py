"""Min-max multi-task learning: minimise the worst task's loss (CS330, multi-task basics).

Instead of ``sum_i w_i L_i``, the min-max objective ``min_theta max_i L_i(theta)`` asks for the
parameters whose *worst* task is as good as possible (task robustness, fairness across tasks;
Mehta, Lee & Gray, "Minimax multi-task learning", AISTATS 2012). Its (sub)gradient is the
gradient of the task with the largest loss alone: ``grad max_i L_i = grad L_{i*}``,
``i* = argmax_i L_i`` (ties share it equally).

Only one task moves per step, so the hard max is jumpy. The smoothed version replaces the max
by a log-sum-exp with temperature ``T > 0``::

    L_T = T * log( (1/k) * sum_i exp(L_i / T) )
    grad L_T = sum_i softmax(L / T)_i * grad L_i

It is a soft maximum: ``mean_i L_i <= L_T <= max_i L_i``, ``L_T -> max_i L_i`` as ``T -> 0`` and
``L_T -> mean_i L_i`` as ``T -> inf`` (the ``1/k`` inside the log only shifts the value by
``T log k``, so the gradient is that of ``T * logsumexp(L / T)``). Equivalently, it is the sum
of the losses weighted by ``softmax(L / T)``: tasks that are doing badly get the most weight.

With task sampling, the maximum is over the ``k`` tasks of the step; min-max recipes train on
every task at every step (``train.tasks_per_step: null``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from manytask.mtl.base import MTLMethod, SharedModel, State, StepInfo, check_losses

__all__ = ["MinMax", "minmax_objective"]


def minmax_objective(losses: Tensor, temperature: float | None = None) -> Tensor:
    """``max_i L_i`` (``temperature=None``) or ``T log((1/k) sum_i exp(L_i / T))``.

    Args:
        losses: ``[k]`` per-task losses.
        temperature: ``None`` for the hard maximum, else ``T > 0``.

    Example:
        >>> L = torch.tensor([1.0, 3.0])
        >>> minmax_objective(L).item(), round(minmax_objective(L, 1.0).item(), 4)
        (3.0, 2.4338)
    """
    if temperature is None:
        return losses.max()
    return temperature * (torch.logsumexp(losses / temperature, 0) - math.log(losses.shape[0]))


class MinMax(MTLMethod):
    """Minimise the worst task's loss, hard or smoothed by a log-sum-exp at ``temperature``.

    Args:
        temperature: ``None`` (default) for ``max_i L_i``; ``T > 0`` for the smoothed
            ``T log((1/k) sum_i exp(L_i / T))``. Losses of different scales (a cross-entropy
            near 2, an MSE near 0.1) make the hard max pick one task always; a temperature
            comparable to the gaps between the losses spreads the weight.

    The logs hold the objective and the weight each task's gradient got (``softmax(L / T)``,
    or the one-hot of the worst task).

    Example:
        >>> w = torch.ones(2, requires_grad=True)
        >>> losses = torch.stack([w[0] ** 2, 3 * w[1] ** 2])     # 1 and 3: task 1 is the worst
        >>> logs, _ = MinMax().backward(losses, None, {}, StepInfo.all_tasks(2))
        >>> w.grad.tolist(), logs["weight"].tolist()
        ([0.0, 6.0], [0.0, 1.0])
    """

    name = "minmax"

    def __init__(self, temperature: float | None = None) -> None:
        if temperature is not None:
            if isinstance(temperature, bool) or not isinstance(temperature, int | float):
                raise ValueError(f"minmax: temperature must be a number > 0; got {temperature!r}")
            if not math.isfinite(temperature) or temperature <= 0:
                raise ValueError(
                    f"minmax: temperature must be finite and > 0 (or null for the hard max); "
                    f"got {temperature!r}"
                )
            temperature = float(temperature)
        self.temperature = temperature

    def hyperparameters(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def backward(
        self, losses: Tensor, model: SharedModel | None, state: State, info: StepInfo
    ) -> tuple[dict[str, Tensor], State]:
        check_losses(losses, info, self.name)
        objective = minmax_objective(losses, self.temperature)
        objective.backward()
        detached = losses.detach()
        if self.temperature is None:
            worst = (detached == detached.max()).to(detached.dtype)
            weight = worst / worst.sum()
        else:
            weight = torch.softmax(detached / self.temperature, 0)
        return {"objective": objective.detach(), "weight": weight}, state
