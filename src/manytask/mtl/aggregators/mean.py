"""Equal weighting: the mean (or the sum) of the task gradients.

The baseline of every multi-task optimiser: ``d = (1/K) sum_i g_i`` (``mean``) or
``d = sum_i g_i`` (``sum``, the gradient of ``sum_i L_i``, CS330's objective with ``w_i = 1``).
Recent studies (Kurin et al. 2022, "In Defense of the Unitary Scalarization for Deep
Multi-Task Learning"; Xin et al. 2022) find that tuned equal weighting is often as good as the
specialised methods, which is why it is here and measured beside them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from manytask.mtl.aggregators.base import GramianAggregator, State

__all__ = ["Mean", "Sum"]


class Mean(GramianAggregator):
    """``d = (1/K) sum_i g_i``: weights ``1/K``.

    Example:
        >>> Mean()(torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
        tensor([0.5000, 1.5000])
    """

    def _weights(self, gramian: Tensor, state: State, tasks: Tensor, generator: object):
        k = gramian.shape[0]
        return torch.full((k,), 1.0 / k, dtype=torch.float64), state

    def _update(self, jacobian: Tensor, state: State, tasks: Tensor, generator: object):
        return jacobian.mean(0), state


class Sum(GramianAggregator):
    """``d = sum_i g_i``: weights ``1`` (the gradient of ``sum_i L_i``).

    Example:
        >>> Sum()(torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
        tensor([1., 3.])
    """

    def _weights(self, gramian: Tensor, state: State, tasks: Tensor, generator: object):
        return torch.ones(gramian.shape[0], dtype=torch.float64), state

    def _update(self, jacobian: Tensor, state: State, tasks: Tensor, generator: object):
        return jacobian.sum(0), state
