"""UPGrad: the mean of every task gradient projected onto the dual cone of all of them.

Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024, eq. 5. The dual cone
of the rows of ``J`` is ``{x : J x >= 0}``, the directions that increase no task's loss when
followed backwards. UPGrad projects each row onto it (``pi_J``, eq. 3) and averages:

    d = (1/K) sum_i pi_J(g_i)

so ``d`` conflicts with no task (``g_i . d >= 0`` for all ``i``) and, when no pair of gradients
conflicts, it is the mean gradient. By the paper's Proposition 1, ``pi_J(J^T u) = J^T v`` with
``v = argmin_{v >= u} v^T G v``; for ``u = e_i`` this is ``v = e_i + x``,
``x = argmin_{x >= 0} 1/2 x^T G x + x^T G e_i``, a non-negative QP solved exactly by block
principal pivoting (:func:`manytask.mtl.aggregators._solvers.nonneg_qp`). The weights are
``(1/K) sum_i v_i`` (``pref="mean"``) or ``sum_i v_i`` (``"sum"``).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from manytask.mtl.aggregators._solvers import nonneg_qp, regularized
from manytask.mtl.aggregators.base import GramianAggregator, State

__all__ = ["UPGrad", "dual_cone_weights"]

Pref = Literal["mean", "sum"]
_PREFS: tuple[str, ...] = get_args(Pref)


def dual_cone_weights(gramian: Tensor) -> Tensor:
    """``[K, K]``: row ``i`` holds ``v_i`` with ``pi_J(g_i) = J^T v_i`` (float64 in and out)."""
    g = regularized(gramian.numpy())
    k = g.shape[0]
    rows = [np.eye(k)[i] + nonneg_qp(g, g[:, i]) for i in range(k)]
    return torch.from_numpy(np.stack(rows))


class UPGrad(GramianAggregator):
    """Unconflicting projection of gradients (Quinton & Rey 2024).

    Args:
        pref: combine the projected gradients by their ``"mean"`` (paper) or ``"sum"``.

    Example:
        >>> J = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
        >>> d = UPGrad()(J)
        >>> d, bool((J @ d >= 0).all())
        (tensor([0.2500, 0.7500]), True)
    """

    def __init__(self, pref: Pref = "mean") -> None:
        if pref not in _PREFS:
            raise ValueError(f"UPGrad: pref must be one of {_PREFS}; got {pref!r}")
        self.pref = pref

    def hyperparameters(self) -> dict[str, object]:
        return {"pref": self.pref}

    def _weights(self, gramian: Tensor, state: State, tasks: Tensor, generator: object):
        w = dual_cone_weights(gramian).sum(0)
        if self.pref == "mean":
            w = w / gramian.shape[0]
        return w, state
