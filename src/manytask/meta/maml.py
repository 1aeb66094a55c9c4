"""Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, ICML 2017), and first-order MAML.

For each task ``T_i`` of a meta-batch, the inner loop adapts the parameters on the support set
by gradient descent (eq. 1, repeated ``steps`` times)::

    phi_i = theta - alpha * grad_theta L_{T_i}(f_theta, D_i^tr)

and the meta-objective is the query loss at the adapted parameters (eq. 2-3)::

    min_theta  sum_i L_{T_i}(f_{phi_i}, D_i^ts)

whose gradient flows through the inner steps: ``d phi_i / d theta = I - alpha * H_i`` per step,
with ``H_i`` the Hessian of the support loss - second-order MAML, the default. First-order MAML
(``first_order=True``, section 5.2 of the paper) drops the second-order term and treats every
inner gradient as a constant, so the meta-gradient is ``sum_i grad_phi L_{T_i}(f_{phi_i},
D_i^ts)``, the query gradient at the adapted parameters.

The learner returns the query predictions at ``phi_i``; the run's objective makes the query
loss and the spine's default ``outer_backward`` (``loss.backward()``) computes the
meta-gradient. Nothing is cloned: the per-task parameters are rows of tensors
``{name: [T, *shape]}`` and the network is a function of them
(:mod:`manytask.meta.functional`).

Batch norm follows the paper's reference code by default (``batch_norm="transductive"``):
batch statistics of the set being processed, in training and at test time alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from torch import Tensor, nn

from manytask.meta.functional import BatchNormMode, per_task
from manytask.meta.inner import Backend, InnerLoopLearner
from manytask.typed import PositiveFloat, PositiveInt, Range

__all__ = ["MAML"]


class MAML(InnerLoopLearner):
    """MAML (second order by default) or first-order MAML over an encoder and a linear head.

    Args:
        encoder: the feature network ``[B, *in_shape] -> [B, D]`` (injected by the run).
        in_shape: per-example input shape (injected).
        ways: number of classes: the head has this many outputs (injected for
            classification; every call must have this many ways).
        out_features: target width of a regression problem (injected).
        inner_lr: the inner learning rate ``alpha`` (0.4 for Omniglot, 0.01 for sinusoids
            in the paper).
        steps: inner gradient steps while training (1 in the paper's Omniglot 5-way runs).
        test_steps: inner steps in eval mode (``None``: ``steps``; the paper tests with 3
            for Omniglot and 10 for sinusoids).
        first_order: first-order MAML (no second derivatives).
        batch_norm: ``"transductive"`` (the paper's) or ``"support"`` statistics for the
            queries (:mod:`manytask.meta.functional`).
        backend: ``"grouped"`` (every task in one call), ``"per_task"`` (the same layers
            task by task: on a CPU in fp32 the fastest, with ``task_workers``), ``"loop"``
            (one ``functional_call`` per task, any encoder) or ``"auto"``.
        remat: recompute each inner step in the backward pass instead of storing it (less
            memory for second-order MAML on larger models or many steps; costs one more
            support forward and backward per step).
        task_workers: split each meta-batch over this many worker threads, forward and
            backward (CPU; :mod:`manytask.meta.parallel`): on a multi-core CPU, faster than
            the intra-op threads of many small per-task operations (docs/RESULTS.md).

    Example:
        >>> import torch
        >>> from manytask.nn import Conv4
        >>> maml = MAML(Conv4(hidden=8), in_shape=(1, 28, 28), ways=5, inner_lr=0.4)
        >>> sx, qx = torch.rand(2, 5, 1, 28, 28), torch.rand(2, 10, 1, 28, 28)
        >>> sy = torch.arange(5).repeat(2, 1)
        >>> logits = maml(sx, sy, qx, ways=5)
        >>> logits.shape
        torch.Size([2, 10, 5])
        >>> logits.sum().backward()   # the meta-gradient, through the inner step
        >>> maml.encoder.blocks[0][0].weight.grad.shape
        torch.Size([8, 1, 3, 3])
    """

    def __init__(
        self,
        encoder: nn.Module,
        in_shape: Sequence[int],
        ways: int | None = None,
        out_features: int | None = None,
        inner_lr: PositiveFloat = 0.4,
        steps: PositiveInt = 1,
        test_steps: Annotated[int, Range(min=0)] | None = None,
        first_order: bool = False,
        batch_norm: BatchNormMode = "transductive",
        backend: Backend = "auto",
        remat: bool = False,
        task_workers: PositiveInt = 1,
    ) -> None:
        super().__init__(
            encoder, in_shape, ways, out_features, inner_lr, steps, test_steps, batch_norm,
            backend, task_workers,
        )  # fmt: skip
        self.first_order = bool(first_order)
        self.remat = bool(remat)

    def extra_repr(self) -> str:
        return f"{self._hyper_repr()}, first_order={self.first_order}, remat={self.remat}"

    def forward(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None
    ) -> Tensor:
        """Adapt to each task's support set, then predict its queries.

        Args:
            support_x: ``[T, N*K, *in_shape]``.
            support_y: labels ``[T, N*K]`` or regression targets ``[T, K, out]``.
            query_x: ``[T, M, *in_shape]``.
            ways: the number of classes (must equal the head's ``ways``).

        Returns:
            Logits ``[T, M, ways]`` or values ``[T, M, out]``.
        """
        self.check_call(support_x, support_y, query_x, ways)
        return self.over_tasks(self._tasks, self.named_theta(), support_x, support_y, query_x)

    def _tasks(
        self, theta: dict[str, Tensor], support_x: Tensor, support_y: Tensor, query_x: Tensor
    ) -> Tensor:
        fast = per_task(theta, support_x.shape[0])
        phi = self.adapt_tasks(
            fast, list(fast), support_x, support_y,
            lr=self.inner_lr, first_order=self.first_order, remat=self.remat,
        )  # fmt: skip
        return self.predict(phi, support_x, query_x)
