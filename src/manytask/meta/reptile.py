"""Reptile (Nichol, Achiam & Schulman, "On First-Order Meta-Learning Algorithms", 2018).

For each task of a meta-batch of ``n``, run ``steps`` steps of SGD on its support set from
``theta`` to get ``phi_i`` (the inner loop of :func:`manytask.meta.functional.adapt`, with no
meta-gradient graph at all), then move ``theta`` towards the adapted weights (Algorithm 2,
batched)::

    theta <- theta + epsilon * (1/n) sum_i (phi_i - theta)

This outer update is not the gradient of a loss, so Reptile supplies it through the spine's
update hook: :meth:`Reptile.outer_backward` writes ``theta - mean_i phi_i`` into ``.grad``, and
the run's optimiser steps with it - plain SGD with learning rate ``epsilon`` is exactly the
formula above (the paper anneals ``epsilon`` linearly to 0; a cosine schedule to 0 is close).
The forward pass returns the query predictions at ``phi_i`` (for the loss and accuracy that
the run logs; they carry no gradient).

Deviations from the paper's Omniglot runs, stated: the inner loop is plain SGD on the whole
support set (the paper uses Adam with ``beta1 = 0`` on mini-batches of it); batch norm is
``"transductive"`` (the paper's transductive numbers) or ``"support"`` (queries normalised
with the support set's statistics; the paper's non-transductive setting normalises each query
together with the support set).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from torch import Tensor, nn

from manytask.meta.functional import BatchNormMode, adapt
from manytask.meta.inner import Backend, InnerLoopLearner
from manytask.typed import PositiveFloat, PositiveInt, Range

__all__ = ["Reptile"]


class Reptile(InnerLoopLearner):
    """Reptile: SGD on each task, then ``theta`` moves towards the adapted weights.

    Args:
        encoder: the feature network (injected by the run).
        in_shape: per-example input shape (injected).
        ways: number of classes (injected for classification).
        out_features: target width of a regression problem (injected).
        inner_lr: the inner SGD learning rate.
        steps: inner SGD steps while training (5 in the paper's Omniglot runs).
        test_steps: inner steps in eval mode (``None``: ``steps``; the paper uses 50).
        batch_norm: ``"transductive"`` or ``"support"`` (see :mod:`manytask.meta.functional`).
        backend: ``"grouped"``, ``"per_task"``, ``"loop"`` or ``"auto"``.

    Train it with SGD at learning rate ``epsilon`` (the outer step size); Adam on the same
    direction also works (section 5 of the paper).

    Example:
        >>> from manytask.nn import Conv4
        >>> reptile = Reptile(Conv4(hidden=8), in_shape=(1, 28, 28), ways=5)
        >>> opt = torch.optim.SGD(reptile.parameters(), lr=1.0)
        >>> sx, qx = torch.rand(2, 5, 1, 28, 28), torch.rand(2, 10, 1, 28, 28)
        >>> logits = reptile(sx, torch.arange(5).repeat(2, 1), qx, ways=5)
        >>> loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.zeros(20).long())
        >>> reptile.outer_backward(loss)   # .grad = theta - mean_i phi_i
        >>> opt.step()                     # theta <- theta + 1.0 * (mean_i phi_i - theta)
    """

    def __init__(
        self,
        encoder: nn.Module,
        in_shape: Sequence[int],
        ways: int | None = None,
        out_features: int | None = None,
        inner_lr: PositiveFloat = 0.1,
        steps: PositiveInt = 5,
        test_steps: Annotated[int, Range(min=0)] | None = None,
        batch_norm: BatchNormMode = "transductive",
        backend: Backend = "auto",
    ) -> None:
        super().__init__(
            encoder, in_shape, ways, out_features, inner_lr, steps, test_steps, batch_norm, backend
        )
        self._direction: dict[str, Tensor] | None = None

    def extra_repr(self) -> str:
        return self._hyper_repr(workers=False)  # Reptile takes no task_workers

    def forward(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None
    ) -> Tensor:
        """SGD on each support set, then the query predictions at ``phi_i`` (no gradient).

        In training mode with gradients enabled it also keeps ``theta - mean_i phi_i`` for
        :meth:`outer_backward`.
        """
        self.check_call(support_x, support_y, query_x, ways)
        record = self.training and torch.is_grad_enabled()
        theta = self.named_theta()
        fast = self.per_task_theta(support_x.shape[0])
        phi = self.adapt(fast, support_x, support_y)
        if record:
            self._direction = {n: p.detach() - phi[n].mean(0) for n, p in theta.items()}
        with torch.no_grad():
            return self.predict(phi, support_x, query_x)

    def adapt(
        self, fast: dict[str, Tensor], support_x: Tensor, support_y: Tensor
    ) -> dict[str, Tensor]:
        """``phi_i``: the inner SGD steps from ``fast`` (no graph to ``theta``)."""
        return adapt(
            self.net, fast, list(fast), support_x, support_y,
            lr=self.inner_lr, steps=self.current_steps(), mode="none",
        )  # fmt: skip

    def precision_caution(self, precision: str) -> str | None:
        """None: Reptile differentiates through no inner step (its update is ``theta - phi``)."""
        return None

    def outer_backward(self, loss: Tensor) -> None:
        """Add ``theta - mean_i phi_i`` of the last training call to ``.grad`` (``loss`` unused).

        Raises:
            RuntimeError: no training-mode forward pass since the last call.
        """
        if self._direction is None:
            raise RuntimeError(
                "Reptile.outer_backward needs the adapted weights of a forward pass in training "
                "mode with gradients enabled; call the learner on a training batch first"
            )
        for name, p in self.named_theta().items():
            d = self._direction[name].to(p.dtype)
            p.grad = d.clone() if p.grad is None else p.grad + d
        self._direction = None
