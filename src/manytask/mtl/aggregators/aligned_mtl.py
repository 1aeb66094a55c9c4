"""Aligned-MTL: make the task gradients orthogonal and of equal size (condition number 1).

Senushkin et al., "Independent Component Alignment for Multi-Task Learning", CVPR 2023,
Algorithm 1. The Jacobian's conditioning measures how much its rows dominate and conflict;
Aligned-MTL replaces ``J = U S V^T`` by the aligned ``J_hat = sigma U V^T`` (every singular
value equal to ``sigma``; eq. 10), whose rows are orthogonal and of equal norm, and steps along
``J_hat^T w``. In the Gramian ``G = J J^T = V L V^T`` (rank ``r``, eigenvalues ``L``), the
aligned direction is ``J^T B w`` with the balance matrix

    B = sigma V_r L_r^{-1/2} V_r^T,     sigma = sqrt(lambda_min) of the rank-r part (eq. 11)

and ``w`` the task preferences (``1`` each, as in the official code). The scale ``sigma`` may
also be the median or the mean eigenvalue's root (``scale="median"`` / ``"mean"``). Eigenvalues
below ``K * max(L) * 1.2e-7`` (float32's resolution of a Gramian computed in float32) count as
zero. A zero Jacobian gives a zero direction.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from manytask.mtl.aggregators.base import GramianAggregator, State

__all__ = ["AlignedMTL", "balance_matrix"]

Scale = Literal["min", "median", "mean"]
_SCALES: tuple[str, ...] = get_args(Scale)
_EPS32 = float(torch.finfo(torch.float32).eps)


def balance_matrix(gramian: Tensor, scale: Scale = "min") -> Tensor:
    """The balance matrix ``B [K, K]`` of a float64 Gramian (zeros for a zero Gramian).

    ``B J`` has orthogonal rows of norm ``sigma`` on the span of ``J``: ``B G B = sigma^2 I``
    when ``G`` has full rank.
    """
    k = gramian.shape[0]
    lam, vec = torch.linalg.eigh(gramian)
    top = lam.max()
    if not top > 0:
        return torch.zeros(k, k, dtype=gramian.dtype)
    keep = lam > top * k * _EPS32
    lam, vec = lam[keep], vec[:, keep]
    if scale == "min":
        sigma2 = lam.min()
    elif scale == "median":
        sigma2 = lam.median()
    else:
        sigma2 = lam.mean()
    return sigma2.sqrt() * (vec * lam.rsqrt()) @ vec.T


class AlignedMTL(GramianAggregator):
    """Independent component alignment (Senushkin et al. 2023).

    Args:
        scale: ``sigma^2`` is the smallest (paper), median or mean non-zero eigenvalue of ``G``.

    Example:
        >>> J = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
        >>> AlignedMTL()(J)    # both rows rescaled to the smallest singular value
        tensor([1., 1.])
    """

    def __init__(self, scale: Scale = "min") -> None:
        if scale not in _SCALES:
            raise ValueError(f"AlignedMTL: scale must be one of {_SCALES}; got {scale!r}")
        self.scale = scale

    def hyperparameters(self) -> dict[str, object]:
        return {"scale": self.scale}

    def _weights(self, gramian: Tensor, state: State, tasks: Tensor, generator: object):
        balance = balance_matrix(gramian, self.scale)
        return balance @ torch.ones(gramian.shape[0], dtype=torch.float64), state
