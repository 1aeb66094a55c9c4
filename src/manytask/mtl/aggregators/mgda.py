"""MGDA: the minimum-norm point of the convex hull of the task gradients.

Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018, after
Desideri's multiple-gradient descent algorithm (2012). Eq. (3): the common descent direction is

    d = sum_i a_i g_i,   a = argmin_{a in simplex} || sum_i a_i g_i ||^2 = argmin a^T G a

with ``G = J J^T``. Either ``d = 0`` (the point is Pareto-stationary) or ``-d`` decreases every
task's loss: the optimality conditions of the QP give ``g_i . d >= ||d||^2`` for every ``i``,
with equality where ``a_i > 0``.

The paper solves the QP with Frank-Wolfe (Algorithm 2) and a closed form for ``K = 2``
(Algorithm 1); here it is solved exactly by an active-set method in the ``K``-dimensional weight
space (:func:`manytask.mtl.aggregators._solvers.box_qp`), which ends at a point that meets the
KKT conditions up to round-off.

**MGDA-UB** (Section 3.3, Theorem 1): with a shared encoder ``Z = f(x; theta_sh)`` and task heads,
``||sum_i a_i grad_theta L_i|| <= ||dZ/dtheta|| ||sum_i a_i grad_Z L_i||``, so solving the QP on the
Gramian of the *representation* Jacobian ``grad_Z L_i`` (one backward through the heads) gives
weights ``a`` that are then applied to the losses (``sum_i a_i L_i``, one backward through the
trunk). ``MGDA().weights(representation_gramian)`` is exactly that; see
:func:`manytask.mtl.jacobian.representation_gramian` and the ``mgda_ub`` method.
"""

from __future__ import annotations

import torch
from torch import Tensor

from manytask.mtl.aggregators._solvers import box_qp, regularized
from manytask.mtl.aggregators.base import GramianAggregator, State

__all__ = ["MGDA", "min_norm_weights"]


def min_norm_weights(gramian: Tensor) -> Tensor:
    """``argmin_{a in simplex} a^T G a`` for a float64 Gramian ``[K, K]`` (float64 ``[K]``).

    Example:
        >>> g = torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
        >>> min_norm_weights(g)   # the point of the segment [(1, 0), (0, 2)] closest to 0
        tensor([0.8000, 0.2000], dtype=torch.float64)
    """
    k = gramian.shape[0]
    if k == 1:
        return torch.ones(1, dtype=torch.float64)
    g = regularized(gramian.numpy())
    zero = torch.zeros(k, dtype=torch.float64).numpy()
    return torch.from_numpy(box_qp(g, zero, zero, simplex=True))


class MGDA(GramianAggregator):
    """The min-norm point of the convex hull of the rows (Sener & Koltun 2018, eq. 3).

    Example:
        >>> J = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> MGDA()(J)
        tensor([0.8000, 0.4000])
    """

    def _weights(self, gramian: Tensor, state: State, tasks: Tensor, generator: object):
        return min_norm_weights(gramian), state
