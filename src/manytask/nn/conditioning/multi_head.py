"""Multi-head architecture: a shared trunk and one output head per task (hard parameter sharing).

The lecture's most common choice (Caruana 1997's hard parameter sharing; "Shared-Bottom" in
the MMoE paper): ``y_i = h_i(f_sh(x))`` with ``theta_sh`` the trunk ``f_sh`` and ``theta_i``
the head (tower) ``h_i``. Conditioning on a one-hot ``z_i`` happens at the very end, by
picking the head. The trunk's output is the **shared representation** ``Z = f_sh(x)`` that
MGDA-UB (Sener & Koltun 2018) differentiates with respect to: :meth:`MultiHead.
shared_representation` gives it and :meth:`MultiHead.forward_representation` finishes the
forward pass from it.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from manytask.nn.backbones import BackboneFactory, Trunk
from manytask.nn.conditioning.base import MultiTaskModel, Request, TaskHeads, check_hidden

__all__ = ["MultiHead"]


class MultiHead(MultiTaskModel):
    """A shared trunk (the backbone) and one head per task.

    Args:
        backbone: a factory building the backbone (called once).
        input_shape: per-example input shape.
        num_outputs: output size of every task.
        head_hidden: hidden widths of each task's tower (``()`` = a linear head).

    Example:
        >>> import torch
        >>> from functools import partial
        >>> from manytask.nn.backbones import MLP
        >>> model = MultiHead(partial(MLP, 6, hidden=(16,)), (6,), (3, 1))
        >>> model(torch.zeros(4, 6), 0).shape, model.parameter_counts()
        (torch.Size([4, 3]), {'shared': 112, 'per_task': [51, 17]})
    """

    shares_input_pass = True

    def __init__(
        self,
        backbone: BackboneFactory,
        input_shape: Sequence[int],
        num_outputs: Sequence[int],
        *,
        head_hidden: Sequence[int] = (),
    ) -> None:
        super().__init__(input_shape, num_outputs)
        self.head_hidden = check_hidden(type(self).__name__, "head_hidden", head_hidden)
        self.trunk = Trunk(backbone(), input_shape)
        self.heads = TaskHeads(self.trunk.out_features, self.num_outputs, "per_task", head_hidden)
        self._check_split()

    def shared_representation(self, x: Tensor) -> Tensor:
        """``Z = f_sh(x)``: ``[B, *input_shape] -> [B, F]``."""
        self._check_x(x)
        return self.trunk(x)

    def forward_representation(self, z: Tensor, task: int) -> Tensor:
        """Task ``task``'s output from the shared representation: ``[B, F] -> [B, n_task]``."""
        return self.heads(z, self._check_task(task))

    def _forward_requests(self, x: Tensor, requests: Sequence[Request]) -> list[Tensor]:
        z = self.trunk(x)
        return [self.heads(z[s:e], t) for t, s, e in requests]

    def _task_parameter_list(self, task: int) -> list[nn.Parameter]:
        return self.heads.task_parameters(task)

    def extra_repr(self) -> str:
        return (
            f"input_shape={self.input_shape}, num_outputs={self.num_outputs}, "
            f"head_hidden={self.head_hidden}"
        )
