"""The one interface every meta-learner shares.

A meta-learner maps a batch of ``T`` tasks to predictions for their query points::

    learner(support_x, support_y, query_x, ways=None) -> predictions

Classification (``support_y`` holds integer labels):
    ``support_x [T, N*K, *x]``, ``support_y [T, N*K]`` (labels ``0..N-1``),
    ``query_x [T, N*Q, *x]`` -> logits (or scores) ``[T, N*Q, N]``.
Regression (``support_y`` holds real targets):
    ``support_x [T, K, *x]``, ``support_y [T, K, out]``, ``query_x [T, Q, *x]``
    -> values ``[T, Q, out]`` (``[T, Q, 2*out]`` for a Gaussian head).

``ways`` is the number of classes ``N``. The loop passes it (it is known from the episode
without looking at the labels); learners never compute ``int(support_y.max()) + 1``, which
would force a device sync and break ``torch.compile`` and ``vmap``. Learners whose output layer
has a fixed size (MANN, SNAIL, MAML) take ``ways`` at construction and check the call.

Black-box (a network reads the support set), optimisation-based (an inner loop adapts
parameters on the support set) and non-parametric (the support set is compared with the
queries) learners all fit it, so one loop trains them all: the run's objective turns the
predictions and ``query_y`` into a loss, then :meth:`MetaLearner.outer_backward` fills the
gradients and the optimiser steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from torch import Tensor, nn

__all__ = ["MetaLearner", "check_task_batch", "task_kind"]

Kind = Literal["classification", "regression"]


def task_kind(support_y: Tensor) -> Kind:
    """``"regression"`` for real-valued targets, ``"classification"`` for integer labels."""
    return "regression" if support_y.is_floating_point() else "classification"


def check_task_batch(
    support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None
) -> Kind:
    """Validate the shapes of a batch of tasks; raise ``ValueError`` naming the culprit.

    Returns:
        The kind of batch, told by ``support_y``: integer labels ``[T, N*K]`` make a
        classification batch, real targets ``[T, K, out]`` a regression batch.
    """
    if support_x.dim() < 3:
        raise ValueError(f"support_x must be [T, N*K, ...], got shape {tuple(support_x.shape)}")
    kind = task_kind(support_y)
    if kind == "classification":
        if support_y.shape != support_x.shape[:2]:
            raise ValueError(
                f"support_y must be labels [T, N*K] = {tuple(support_x.shape[:2])} to match "
                f"support_x, got {tuple(support_y.shape)}"
            )
        if ways is not None and ways < 1:
            raise ValueError(f"ways must be >= 1, got {ways}")
    else:
        if support_y.dim() != 3 or support_y.shape[:2] != support_x.shape[:2]:
            raise ValueError(
                f"support_y must be real targets [T, K, out] with T, K = "
                f"{tuple(support_x.shape[:2])} to match support_x, got {tuple(support_y.shape)}"
            )
    if query_x.dim() != support_x.dim() or query_x.shape[0] != support_x.shape[0]:
        raise ValueError(
            f"query_x must be [T, M, ...] with T = {support_x.shape[0]} and the same "
            f"per-example shape as support_x, got {tuple(query_x.shape)}"
        )
    if query_x.shape[2:] != support_x.shape[2:]:
        raise ValueError(
            f"query_x examples have shape {tuple(query_x.shape[2:])}, support_x examples "
            f"{tuple(support_x.shape[2:])}: they must match"
        )
    return kind


class MetaLearner(nn.Module):
    """Base class: subclasses implement ``forward(support_x, support_y, query_x, ways=None)``.

    Attributes:
        problems: the kinds of task batch the learner accepts (``"classification"``,
            ``"regression"``); the run checks its data against it when the config is loaded.
        order_invariant: whether the predictions ignore the order of the support set.
            Set-based learners (prototypes, attention over the set, an inner loop on the whole
            set) are invariant; sequence learners (MANN, SNAIL) read the support set as a
            sequence and set this to False (their docstring says how the order matters). The
            test battery checks the declared behaviour.
        regression_objective: the objective its regression predictions are made for:
            ``"regression"`` (values ``[T, Q, out]``, the default) or ``"gaussian_nll"`` (a
            mean and a raw scale, ``[T, Q, 2*out]``, as neural processes predict). The config
            picks it for ``objective: auto`` and refuses an objective that does not fit.
        classification_objective: the objective ``objective: auto`` picks on classification
            data: ``"classification"`` (cross-entropy on logits, the default) or
            ``"one_hot_mse"`` (scores regressed onto one-hot labels, as Relation Networks
            train). A recipe may still name another one explicitly.
        tiny_args: constructor arguments of a small, fast instance, for the test battery and
            smoke runs (e.g. SNAIL's paper-sized attention and TC blocks shrunk); ``{}`` when
            the defaults are already small.
    """

    problems: ClassVar[tuple[Kind, ...]] = ("classification",)
    order_invariant: ClassVar[bool] = True
    regression_objective: ClassVar[str] = "regression"
    classification_objective: ClassVar[str] = "classification"
    tiny_args: ClassVar[Mapping[str, Any]] = {}

    def forward(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None
    ) -> Tensor:
        raise NotImplementedError

    def outer_backward(self, loss: Tensor) -> None:
        """Fill ``.grad`` of the meta-parameters for the optimiser's step.

        The default is the gradient of the query loss (``loss.backward()``). A learner whose
        outer update is something else (Reptile: ``theta - phi``) overrides this one method;
        the training loop calls it and never branches on the learner.
        """
        loss.backward()

    def precision_caution(self, precision: str) -> str | None:
        """What is known to go wrong when training this learner at ``precision`` (``"fp32"``,
        ``"bf16"``), for the run to warn about; None (the default) when nothing is."""
        return None

    def resource_caution(self, device_type: str, threads: int) -> str | None:
        """What is wasteful about running this learner on ``device_type`` with ``threads``
        intra-op threads, for the run to warn about; None (the default) when nothing is."""
        return None

    def ways_of(self, support_y: Tensor, ways: int | None) -> int:
        """``ways`` when given, else the labels' maximum + 1 (a device sync: avoid in loops)."""
        if ways is not None:
            return int(ways)
        return int(support_y.max()) + 1
