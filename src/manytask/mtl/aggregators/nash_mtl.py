"""Nash-MTL: the Nash bargaining solution between the tasks.

Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022. The tasks bargain over an
update ``d`` in the ball of radius ``eps``; the Nash bargaining solution maximises
``sum_i log(g_i . d)``, and (Theorem 5.1) it is ``d = sum_i a_i g_i`` with ``a > 0`` solving

    G a = 1 / a        (elementwise: a_i (G a)_i = 1, i.e. g_i . d = 1 / a_i)

so every task gets a positive directional derivative, and tasks with small or conflicting
gradients get larger weights. The paper (Algorithm 1) solves it by a sequence of convex
approximations with cvxpy; here ``a`` is the minimiser of the strictly convex
``1/2 a^T G a - sum_i log a_i`` (its gradient is ``G a - 1/a``), found exactly by damped Newton
(:func:`manytask.mtl.aggregators._solvers.nash_bargaining`), warm-started from the previous
step's solution. As in the official code, ``G`` is normalised by its Frobenius norm for the
solve (``a = b / sqrt(||G||_F)`` with ``(G/||G||_F) b = 1/b``), the weights can be refreshed only
every ``update_weights_every`` steps (re-used in between), and the direction is clipped to norm
``max_norm`` (the official default 1; ``0`` turns clipping off).

State: ``{"alpha": [K]`` last normalised solution (warm start), ``"weights": [K]`` last weights,
``"step": int}``, indexed by the run's task index.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from manytask.mtl.aggregators._solvers import nash_bargaining, regularized
from manytask.mtl.aggregators.base import GramianAggregator, State, check_number

__all__ = ["NashMTL"]


class NashMTL(GramianAggregator):
    """Multi-task learning as a bargaining game (Navon et al. 2022), with memory.

    Args:
        max_norm: clip the direction to this norm (``0``: no clipping).
        update_weights_every: solve for new weights every this many steps.

    Example:
        >>> J = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> w, _ = NashMTL(max_norm=0).weights(J @ J.T)
        >>> w, J @ (w @ J) * w      # G a = 1 / a
        (tensor([1.0000, 0.5000]), tensor([1., 1.]))
    """

    stateful = True

    def __init__(self, max_norm: float = 1.0, update_weights_every: int = 1) -> None:
        self.max_norm = check_number("NashMTL", "max_norm", max_norm, low=0.0)
        if (
            isinstance(update_weights_every, bool)
            or not isinstance(update_weights_every, int)
            or update_weights_every < 1
        ):
            raise ValueError(
                "NashMTL: update_weights_every must be a positive int; got "
                f"{update_weights_every!r}"
            )
        self.update_weights_every = update_weights_every

    def hyperparameters(self) -> dict[str, object]:
        return {"max_norm": self.max_norm, "update_weights_every": self.update_weights_every}

    def init(self, num_tasks: int) -> State:
        super().init(num_tasks)
        return {
            "alpha": torch.ones(num_tasks, dtype=torch.float64),
            "weights": torch.ones(num_tasks, dtype=torch.float64),
            "step": 0,
        }

    def _weights(self, gramian: Tensor, state: State, tasks: Tensor, generator: object):
        alpha = state["alpha"].to("cpu", torch.float64).clone()
        weights = state["weights"].to("cpu", torch.float64).clone()
        if int(tasks.max()) >= alpha.shape[0]:
            raise ValueError(
                f"NashMTL: task {int(tasks.max())} but the state was made for {alpha.shape[0]} "
                "tasks; init() with the run's number of tasks"
            )
        step = int(state["step"])
        if step % self.update_weights_every == 0:
            scale = float(torch.linalg.matrix_norm(gramian))
            if scale > 0:
                b = nash_bargaining(regularized(gramian.numpy() / scale), alpha[tasks].numpy())
                alpha[tasks] = torch.from_numpy(b)
                weights[tasks] = torch.from_numpy(b) / math.sqrt(scale)
        w = weights[tasks].clone()
        if self.max_norm > 0:
            norm = math.sqrt(max(float(w @ gramian @ w), 0.0))
            if norm > self.max_norm:
                w = w * (self.max_norm / norm)
        return w, {"alpha": alpha, "weights": weights, "step": step + 1}
