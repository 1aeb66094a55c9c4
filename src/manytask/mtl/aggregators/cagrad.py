"""CAGrad: the direction that maximises the worst task's improvement near the mean gradient.

Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021. With
``g0 = (1/K) sum_i g_i`` the mean gradient, CAGrad solves (eq. 2)

    max_d min_i g_i . d   subject to   ||d - g0|| <= c ||g0||,     c in [0, 1)

whose dual (eq. 3 and Algorithm 1) is a problem over the simplex,

    w* = argmin_{w in simplex}  g_w . g0 + c ||g0|| ||g_w||,     g_w = sum_i w_i g_i,

and the update is ``d = g0 + (c ||g0|| / ||g_w*||) g_w*``. With ``c = 0`` it is exactly the mean
gradient (the mean is what is left of the formula). The official code then rescales ``d``:
by ``1 / (1 + c^2)`` (its default, ``rescale="1+c^2"``), by ``1 / (1 + c)``, or not at all.

Everything is a function of the Gramian, and the dual is solved exactly by alternating an
exact simplex QP with the closed form of ``||g_w||``
(:func:`manytask.mtl.aggregators._solvers.cagrad_weights`).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor

from manytask.mtl.aggregators._solvers import cagrad_weights, regularized
from manytask.mtl.aggregators.base import GramianAggregator, State, check_number

__all__ = ["CAGrad", "Rescale"]

Rescale = Literal["1+c^2", "1+c", "none"]
_RESCALES: tuple[str, ...] = get_args(Rescale)


class CAGrad(GramianAggregator):
    """Conflict-averse gradient descent (Liu et al. 2021).

    Args:
        c: the radius factor, ``>= 0`` (the paper uses ``c in [0, 1)``; 0.4 and 0.5 in its
            experiments); ``0`` is the mean gradient.
        rescale: divide the direction by ``1 + c^2`` (official default), ``1 + c``, or not.

    Example:
        >>> J = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> CAGrad(c=0.0)(J)
        tensor([0.5000, 0.5000])
    """

    def __init__(self, c: float = 0.4, rescale: Rescale = "1+c^2") -> None:
        self.c = check_number("CAGrad", "c", c, low=0.0)
        if rescale not in _RESCALES:
            raise ValueError(f"CAGrad: rescale must be one of {_RESCALES}; got {rescale!r}")
        self.rescale = rescale

    def hyperparameters(self) -> dict[str, object]:
        return {"c": self.c, "rescale": self.rescale}

    def _weights(self, gramian: Tensor, state: State, tasks: Tensor, generator: object):
        k = gramian.shape[0]
        w = torch.full((k,), 1.0 / k, dtype=torch.float64)
        g0_norm = math.sqrt(max(float(w @ gramian @ w), 0.0))
        if self.c > 0 and g0_norm > 0:
            w_star, gw_norm = cagrad_weights(regularized(gramian.numpy()), self.c)
            # ||g_w|| = 0 means g_w* = 0: the correction term vanishes (0 / 0 read as 0).
            if gw_norm > 1e-12 * g0_norm:
                w = w + (self.c * g0_norm / gw_norm) * torch.from_numpy(w_star)
        if self.rescale == "1+c^2":
            w = w / (1.0 + self.c**2)
        elif self.rescale == "1+c":
            w = w / (1.0 + self.c)
        return w, state
