"""IMTL-G: the direction whose projections onto every task's unit gradient are equal.

Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021, Section 3.2 (the gradient
balance part, IMTL-G). Find ``d = sum_i a_i g_i`` with ``sum_i a_i = 1`` such that
``d . u_i`` is the same for every task, ``u_i = g_i / ||g_i||``. The paper's closed form (eq. 6)
is ``a_{2:K} = g_1 U^T (D U^T)^{-1}``, ``a_1 = 1 - sum a_{2:K}``, with rows
``D_i = g_1 - g_i`` and ``U_i = u_1 - u_i``.

Equivalently, in the Gramian: ``d . u_i = c`` for all ``i`` means ``G a = c n`` with
``n_i = ||g_i||``, so ``a = G^+ n / (1^T G^+ n)``. The pseudo-inverse form is the same as
eq. 6 when the gradients are linearly independent, and is defined when they are not (torchjd's
generalisation, Quinton & Rey 2024); when ``1^T G^+ n = 0`` the direction is 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from manytask.mtl.aggregators.base import GramianAggregator, State

__all__ = ["IMTLG"]


class IMTLG(GramianAggregator):
    """Impartial MTL, gradient part (Liu et al. 2021): equal projections on every task.

    Example:
        >>> J = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> d = IMTLG()(J)
        >>> d, (J @ d / J.norm(dim=1))
        (tensor([0.6667, 0.6667]), tensor([0.6667, 0.6667]))
    """

    def _weights(self, gramian: Tensor, state: State, tasks: Tensor, generator: object):
        norms = gramian.diagonal().clamp_min(0.0).sqrt()
        v = torch.linalg.pinv(gramian, hermitian=True) @ norms
        total = v.sum()
        scale = gramian.diagonal().sum().clamp_min(1e-300)
        # 1^T G^+ n has units 1/|g|; compare it with 1/sqrt(trace G) to call it zero.
        if total.abs() * scale.sqrt() < 1e-9:
            return torch.zeros_like(v), state
        return v / total, state
