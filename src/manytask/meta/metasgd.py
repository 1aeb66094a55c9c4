"""Meta-SGD (Li, Zhou, Chen & Li, "Meta-SGD: Learning to Learn Quickly for Few-Shot
Learning", 2017).

MAML with a learned inner learning rate for every parameter: the adaptation (eq. 2 of the
paper) is

    theta'_i = theta - alpha ∘ grad_theta L_{T_i}(theta, D_i^tr)

with ``alpha`` a tensor of the shape of ``theta`` (``∘`` is the element-wise product), and the
meta-objective (eq. 3) ``min_{theta, alpha} sum_i L_{T_i}(theta'_i, D_i^ts)`` is minimised
over both, so the optimiser steps ``theta`` and ``alpha`` together from the query loss. The
paper adapts with one step; ``steps > 1`` repeats the step with the same ``alpha``. ``alpha``
is drawn uniformly from ``[lr_init_low, lr_init_high]`` (the paper's ``[0.005, 0.1]``).
The inner loop is the one of MAML (:func:`manytask.meta.functional.adapt`) with per-parameter
rates; batch norm as in :mod:`manytask.meta.maml`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from torch import Tensor, nn

from manytask.meta.functional import BatchNormMode, per_task
from manytask.meta.inner import Backend, InnerLoopLearner
from manytask.typed import PositiveFloat, PositiveInt, Range

__all__ = ["MetaSGD"]

_RATE = "inner_lr:"  # the rates' keys beside theta's in the dict split over task workers


class MetaSGD(InnerLoopLearner):
    """Meta-SGD: MAML whose inner learning rate is a learned tensor per parameter.

    Args:
        encoder: the feature network (injected by the run).
        in_shape: per-example input shape (injected).
        ways: number of classes (injected for classification).
        out_features: target width of a regression problem (injected).
        steps: inner steps while training (1 in the paper).
        test_steps: inner steps in eval mode (``None``: ``steps``).
        lr_init_low: lower end of the uniform draw of the initial rates.
        lr_init_high: upper end of that draw.
        first_order: drop the second-order terms of the meta-gradient of ``theta`` (the
            rates still get their exact gradient, which needs no second derivative).
        batch_norm: ``"transductive"`` or ``"support"`` (see :mod:`manytask.meta.functional`).
        backend: ``"grouped"``, ``"per_task"``, ``"loop"`` or ``"auto"``.
        remat: recompute each inner step in the backward pass (less memory).
        task_workers: split each meta-batch over this many worker threads (CPU; see
            :class:`~manytask.meta.MAML`).

    Attributes:
        inner_lrs: the learned rates, one tensor per parameter of ``named_theta()``, in order.

    Example:
        >>> from manytask.nn import MLP
        >>> learner = MetaSGD(MLP(1, hidden=(40, 40)), in_shape=(1,), out_features=1)
        >>> x, y = torch.rand(4, 5, 1), torch.rand(4, 5, 1)
        >>> learner(x, y, torch.rand(4, 10, 1)).shape
        torch.Size([4, 10, 1])
        >>> len(learner.inner_lrs) == len(learner.named_theta())
        True
    """

    def __init__(
        self,
        encoder: nn.Module,
        in_shape: Sequence[int],
        ways: int | None = None,
        out_features: int | None = None,
        steps: PositiveInt = 1,
        test_steps: Annotated[int, Range(min=0)] | None = None,
        lr_init_low: PositiveFloat = 0.005,
        lr_init_high: PositiveFloat = 0.1,
        first_order: bool = False,
        batch_norm: BatchNormMode = "transductive",
        backend: Backend = "auto",
        remat: bool = False,
        task_workers: PositiveInt = 1,
    ) -> None:
        if not 0 < lr_init_low <= lr_init_high:
            raise ValueError(
                f"MetaSGD: need 0 < lr_init_low <= lr_init_high, got {lr_init_low} and "
                f"{lr_init_high}"
            )
        mid = 0.5 * (float(lr_init_low) + float(lr_init_high))
        super().__init__(
            encoder, in_shape, ways, out_features, mid, steps, test_steps, batch_norm, backend,
            task_workers,
        )  # fmt: skip
        self.lr_init_low, self.lr_init_high = float(lr_init_low), float(lr_init_high)
        self.first_order = bool(first_order)
        self.remat = bool(remat)
        self.inner_lrs = nn.ParameterList(
            [nn.Parameter(torch.full_like(p, mid)) for p in self.named_theta().values()]
        )

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw every rate uniformly from ``[lr_init_low, lr_init_high]``."""
        with torch.no_grad():
            for a in self.inner_lrs:
                a.uniform_(self.lr_init_low, self.lr_init_high, generator=generator)

    def extra_repr(self) -> str:
        target = (
            f"ways={self.ways}" if self.ways is not None else f"out_features={self.out_features}"
        )
        return (
            f"{target}, steps={self.steps}, test_steps={self.test_steps}, "
            f"lr_init_low={self.lr_init_low:g}, lr_init_high={self.lr_init_high:g}, "
            f"first_order={self.first_order}, batch_norm={self.batch_norm!r}, "
            f"backend={self.backend!r} ({self.backend_used}), remat={self.remat}, "
            f"task_workers={self.task_workers}"
        )

    def rates(self) -> dict[str, Tensor]:
        """The learned rate of every parameter of ``named_theta()``, by name."""
        return dict(zip(self.named_theta(), self.inner_lrs, strict=True))

    def forward(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None
    ) -> Tensor:
        """Adapt with the learned rates, then predict the queries (shapes as :class:`MAML`)."""
        self.check_call(support_x, support_y, query_x, ways)
        params = {**self.named_theta(), **{_RATE + n: a for n, a in self.rates().items()}}
        return self.over_tasks(self._tasks, params, support_x, support_y, query_x)

    def _tasks(
        self, params: dict[str, Tensor], support_x: Tensor, support_y: Tensor, query_x: Tensor
    ) -> Tensor:
        theta = {n: p for n, p in params.items() if not n.startswith(_RATE)}
        rates = {n[len(_RATE) :]: p for n, p in params.items() if n.startswith(_RATE)}
        fast = per_task(theta, support_x.shape[0])
        phi = self.adapt_tasks(
            fast, list(fast), support_x, support_y,
            lr=rates, first_order=self.first_order, remat=self.remat,
        )  # fmt: skip
        return self.predict(phi, support_x, query_x)
