"""ANIL, "Almost No Inner Loop" (Raghu, Raghu, Bengio & Vinyals, "Rapid Learning or Feature
Reuse? Towards Understanding the Effectiveness of MAML", ICLR 2020).

MAML whose inner loop adapts only the head (section 4 of the paper). With ``theta = (w, h)``
the encoder and head parameters, each task adapts the head on its support features,

    h_i = h - alpha * grad_h L_{T_i}(f_{w, h}, D_i^tr)        (``steps`` times)

and the meta-objective ``sum_i L_{T_i}(f_{w, h_i}, D_i^ts)`` is minimised over both ``w`` and
``h``; the encoder's gradient flows through the features of the support set (inside the inner
steps, second order) and of the queries. Since the encoder does not change within a task, its
features are computed once per set, and the inner loop is a few matrix products: ANIL costs
about one forward and backward of the encoder per meta-step, whatever ``steps`` is.
Batch norm as in :mod:`manytask.meta.maml`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from torch import Tensor, nn

from manytask.meta.functional import BatchNormMode, per_task
from manytask.meta.inner import Backend, InnerLoopLearner
from manytask.typed import PositiveFloat, PositiveInt, Range

__all__ = ["ANIL"]


class ANIL(InnerLoopLearner):
    """MAML with only the head adapted in the inner loop.

    Args:
        encoder: the feature network (injected by the run).
        in_shape: per-example input shape (injected).
        ways: number of classes (injected for classification).
        out_features: target width of a regression problem (injected).
        inner_lr: the inner learning rate of the head.
        steps: inner steps while training.
        test_steps: inner steps in eval mode (``None``: ``steps``).
        first_order: treat the inner gradients as constants.
        batch_norm: ``"transductive"`` or ``"support"`` (see :mod:`manytask.meta.functional`).
        backend: ``"grouped"``, ``"per_task"``, ``"loop"`` or ``"auto"``.
        task_workers: split each meta-batch over this many worker threads (CPU; see
            :class:`~manytask.meta.MAML`).

    Example:
        >>> from manytask.nn import Conv4
        >>> anil = ANIL(Conv4(hidden=8), in_shape=(1, 28, 28), ways=5, inner_lr=0.4, steps=5)
        >>> sx, qx = torch.rand(2, 5, 1, 28, 28), torch.rand(2, 10, 1, 28, 28)
        >>> anil(sx, torch.arange(5).repeat(2, 1), qx, ways=5).shape
        torch.Size([2, 10, 5])
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
        task_workers: PositiveInt = 1,
    ) -> None:
        super().__init__(
            encoder, in_shape, ways, out_features, inner_lr, steps, test_steps, batch_norm,
            backend, task_workers,
        )  # fmt: skip
        self.first_order = bool(first_order)

    def extra_repr(self) -> str:
        return f"{self._hyper_repr()}, first_order={self.first_order}"

    def forward(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None
    ) -> Tensor:
        """Encode both sets once, adapt the head per task, predict (shapes as :class:`MAML`)."""
        self.check_call(support_x, support_y, query_x, ways)
        return self.over_tasks(self._tasks, self.named_theta(), support_x, support_y, query_x)

    def _tasks(
        self, shared: dict[str, Tensor], support_x: Tensor, support_y: Tensor, query_x: Tensor
    ) -> Tensor:
        t, ns = support_x.shape[:2]
        theta = per_task(shared, t)
        if self.batch_norm == "transductive":
            fs = self.features(theta, support_x)
            fq = self.features(theta, query_x)
        else:
            f = self.features(theta, torch.cat([support_x, query_x], 1), stats_rows=ns)
            fs, fq = f[:, :ns], f[:, ns:]
        head = {n: p for n, p in theta.items() if n.startswith("head.")}
        if self.inner_mode(self.first_order) == "none":
            fs = fs.detach()
        adapted = self.adapt_tasks(
            head, list(head), fs, support_y,
            lr=self.inner_lr, first_order=self.first_order, net=self._head_net,
        )  # fmt: skip
        return self.apply_head(adapted, fq)

    def _head_net(
        self, params: dict[str, Tensor], features: Tensor, stats_rows: None = None, **_: bool
    ) -> Tensor:
        return self.apply_head(params, features)
