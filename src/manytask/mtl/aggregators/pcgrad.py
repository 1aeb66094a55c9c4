"""PCGrad: project each task gradient off the gradients it conflicts with.

Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020, Algorithm 1. For every
task ``i``, start from ``g_i^PC = g_i`` and visit the other tasks ``j`` in a random order; if
``g_i^PC . g_j < 0`` (a conflict), remove the conflicting component (eq. 1):

    g_i^PC <- g_i^PC - (g_i^PC . g_j) / ||g_j||^2 * g_j

The update is ``d = sum_i g_i^PC``. With two tasks the projected gradients never conflict
(``g_1^PC . g_2 >= 0`` and ``g_2^PC . g_1 >= 0``).

Every ``g_i^PC`` is a combination ``sum_m C_im g_m`` of the original rows, and every quantity the
algorithm reads is an inner product, so it runs on the ``K x K`` Gramian alone: ``C`` starts as
the identity, ``g_i^PC . g_j = (C G)_ij``, a projection subtracts from ``C_ij``, and
``d = J^T C^T 1``. All ``K`` tasks advance through their own random orders together
(``K - 1`` vectorised rounds). The orders come from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import torch
from torch import Tensor

from manytask.mtl.aggregators.base import GramianAggregator, State

__all__ = ["PCGrad", "random_orders"]


def random_orders(k: int, generator: torch.Generator) -> Tensor:
    """``[k, k-1]`` int64: row ``i`` is a uniformly random order of ``{0..k-1} \\ {i}``."""
    keys = torch.rand(k, k, generator=generator, dtype=torch.float64)
    keys.fill_diagonal_(2.0)  # task i itself sorts last and is dropped
    return keys.argsort(dim=1)[:, : k - 1]


class PCGrad(GramianAggregator):
    """Projecting conflicting gradients (Yu et al. 2020, Algorithm 1); randomised.

    Example:
        >>> J = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
        >>> PCGrad()(J, generator=torch.Generator().manual_seed(0))
        tensor([0.5000, 1.5000])
    """

    stochastic = True

    def _weights(self, gramian: Tensor, state: State, tasks: Tensor, generator: object):
        assert isinstance(generator, torch.Generator)
        k = gramian.shape[0]
        coef = torch.eye(k, dtype=torch.float64)
        if k > 1:
            orders = random_orders(k, generator)
            rows = torch.arange(k)
            norms2 = gramian.diagonal()
            for t in range(k - 1):
                j = orders[:, t]
                dots = (coef @ gramian)[rows, j]
                conflict = (dots < 0) & (norms2[j] > 0)
                step = torch.where(conflict, dots / norms2[j].clamp_min(1e-300), 0.0)
                coef[rows, j] -= step
        return coef.sum(0), state
