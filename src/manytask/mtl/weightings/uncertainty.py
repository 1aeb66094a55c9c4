"""Uncertainty weighting: each task's loss scaled by a learned homoscedastic variance.

Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
Geometry and Semantics", CVPR 2018, eq. 7. With a learned noise scale ``sigma_i`` per task,
the joint negative log-likelihood is ``sum_i 1/(2 sigma_i^2) L_i + log sigma_i``; in the log
variance ``s_i = log sigma_i^2`` (the paper's numerically stable form) the objective is

    L(theta, s) = sum_i 1/2 exp(-s_i) L_i(theta) + 1/2 s_i

so the weights are ``w_i = 1/2 exp(-s_i)`` and a task with a large (noisy) loss learns a large
variance and a small weight. (The paper's classification variant, ``1/sigma^2 L + log sigma``,
differs by a factor 2 on the weight; LibMTL, like this module, uses the form above for every
task.)

**Where the log-variances live.** They are learned jointly with ``theta`` by gradient descent
on ``L``; here they are part of the method state (with their Adam moments), and each step
moves them by one Adam step along their exact gradient
``dL/ds_i = 1/2 (1 - exp(-s_i) L_i)`` at this step's losses, at the same time as the optimiser
steps ``theta`` with the weights of the current ``s``. So they are saved in every checkpoint
with the rest of the method state, need no place in the model's optimiser, and a resumed run
continues them exactly. Their learning rate ``lr`` is the method's own (Adam's usual 1e-3 by
default: match it to the run's Adam learning rate to reproduce "one optimiser for both").
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from torch import Tensor

from manytask.mtl.base import LossWeighting, SharedModel, State, StepInfo
from manytask.mtl.weightings._adam import adam_init, adam_step
from manytask.typed import Range

__all__ = ["UncertaintyWeighting"]


class UncertaintyWeighting(LossWeighting):
    """Homoscedastic uncertainty weighting (Kendall et al. 2018, eq. 7).

    Args:
        lr: Adam learning rate of the log-variances.
        init_log_var: initial ``s_i = log sigma_i^2`` (``0``: every weight starts at 1/2).

    Example:
        >>> m = UncertaintyWeighting(lr=0.1)
        >>> state = m.init(2)
        >>> w, state = m.weights(torch.tensor([4.0, 0.25]), state, StepInfo.all_tasks(2))
        >>> w.tolist(), [round(s, 3) for s in state["log_var"]["value"].tolist()]
        ([0.5, 0.5], [0.1, -0.1])
    """

    name = "uncertainty"

    def __init__(
        self,
        lr: Annotated[float, Range(min=0, open=True)] = 1e-3,
        init_log_var: float = 0.0,
    ) -> None:
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
            raise ValueError(f"uncertainty: lr must be a number > 0; got {lr!r}")
        if isinstance(init_log_var, bool) or not isinstance(init_log_var, int | float):
            raise ValueError(f"uncertainty: init_log_var must be a number; got {init_log_var!r}")
        self.lr = float(lr)
        self.init_log_var = float(init_log_var)

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr, "init_log_var": self.init_log_var}

    def init(self, num_tasks: int) -> State:
        super().init(num_tasks)
        return {"log_var": adam_init(torch.full((num_tasks,), self.init_log_var))}

    def weights(self, losses: Tensor, state: State, info: StepInfo) -> tuple[Tensor, State]:
        idx = info.tasks.to("cpu", torch.long)
        s = state["log_var"]["value"].to("cpu", torch.float64)[idx]
        w = 0.5 * torch.exp(-s)
        grad = 0.5 * (1.0 - torch.exp(-s) * losses.to("cpu", torch.float64))
        new = adam_step(state["log_var"], grad, idx, lr=self.lr)
        return w.to(losses), {**state, "log_var": new}

    def backward(
        self, losses: Tensor, model: SharedModel, state: State, info: StepInfo
    ) -> tuple[dict[str, Tensor], State]:
        s = state["log_var"]["value"].to("cpu", torch.float64)[info.tasks.to("cpu", torch.long)]
        logs, new_state = super().backward(losses, model, state, info)
        # The objective includes the regulariser 1/2 sum_i s_i (no gradient for theta).
        logs["objective"] = logs["objective"] + 0.5 * s.sum().to(logs["objective"])
        return logs, new_state
