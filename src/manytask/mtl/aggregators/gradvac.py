"""GradVac: pull each pair of task gradients towards a target similarity learned over training.

Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and Improving Multi-task
Optimization in Massively Multilingual Models", ICLR 2021, Algorithm 1. PCGrad only acts when
two gradients conflict (cosine ``< 0``); GradVac keeps, for every ordered pair ``(i, j)``, an
exponential moving average ``phi_hat_ij`` of their cosine similarity (eq. 3,
``phi_hat <- (1 - beta) phi_hat + beta phi``) and, whenever ``phi_ij < phi_hat_ij``, adds just
enough of ``g_j`` to ``g_i`` to reach the target (eq. 2):

    g_i' = g_i + ||g_i|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2))
                 / (||g_j|| sqrt(1 - phi_hat^2)) * g_j

Tasks ``j != i`` are visited in a random order per ``i`` (from the generator), ``phi`` is the
cosine between the current ``g_i'`` and the original ``g_j``, and the update is ``sum_i g_i'``.
With ``phi_hat = 0`` this is PCGrad's projection. The paper also applies it per layer; here
it acts on the whole shared-parameter vector.

Like PCGrad it runs on the Gramian (``g_i' = sum_m C_im g_m``). The targets are the state:
``{"phi": [K, K]}``, indexed by the run's task index.
"""

from __future__ import annotations

import torch
from torch import Tensor

from manytask.mtl.aggregators.base import GramianAggregator, State, check_number
from manytask.mtl.aggregators.pcgrad import random_orders

__all__ = ["GradVac"]


class GradVac(GramianAggregator):
    """Gradient vaccine (Wang et al. 2021); randomised, with memory.

    Args:
        beta: the EMA rate of the target similarities, in ``[0, 1]`` (``0`` keeps the targets
            at 0: PCGrad).

    Example:
        >>> agg = GradVac(beta=0.5)
        >>> state = agg.init(2)
        >>> J = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
        >>> d, state = agg.update(J, state, generator=torch.Generator().manual_seed(0))
        >>> d, state["phi"][0, 1].item()
        (tensor([0.5000, 1.5000]), -0.3535533905932738)
    """

    stochastic = True
    stateful = True

    def __init__(self, beta: float = 0.5) -> None:
        self.beta = check_number("GradVac", "beta", beta, low=0.0, high=1.0)

    def hyperparameters(self) -> dict[str, object]:
        return {"beta": self.beta}

    def init(self, num_tasks: int) -> State:
        super().init(num_tasks)
        return {"phi": torch.zeros(num_tasks, num_tasks, dtype=torch.float64)}

    def _weights(self, gramian: Tensor, state: State, tasks: Tensor, generator: object):
        assert isinstance(generator, torch.Generator)
        k = gramian.shape[0]
        phi_all = state["phi"].to("cpu", torch.float64).clone()
        if int(tasks.max()) >= phi_all.shape[0]:
            raise ValueError(
                f"GradVac: task {int(tasks.max())} but the state was made for "
                f"{phi_all.shape[0]} tasks; init() with the run's number of tasks"
            )
        target = phi_all[tasks][:, tasks]
        coef = torch.eye(k, dtype=torch.float64)
        if k > 1:
            orders = random_orders(k, generator)
            rows = torch.arange(k)
            norm_j_all = gramian.diagonal().clamp_min(0.0).sqrt()
            for t in range(k - 1):
                j = orders[:, t]
                cg = coef @ gramian
                dots = cg[rows, j]
                norm_i = (cg * coef).sum(1).clamp_min(0.0).sqrt()
                norm_j = norm_j_all[j]
                valid = (norm_i > 0) & (norm_j > 0)
                phi = torch.where(valid, dots / (norm_i * norm_j).clamp_min(1e-300), 0.0)
                phi = phi.clamp(-1.0, 1.0)
                hat = target[rows, j]
                hat_c = hat.clamp(-1.0 + 1e-6, 1.0 - 1e-6)
                adjust = valid & (phi < hat)
                w = (
                    norm_i
                    * (hat_c * (1 - phi**2).sqrt() - phi * (1 - hat_c**2).sqrt())
                    / (norm_j.clamp_min(1e-300) * (1 - hat_c**2).sqrt())
                )
                coef[rows, j] += torch.where(adjust, w, 0.0)
                target[rows, j] = (1.0 - self.beta) * hat + self.beta * phi
        phi_all[tasks.unsqueeze(1), tasks.unsqueeze(0)] = target
        return coef.sum(0), {**state, "phi": phi_all}
