"""The one interface every meta-learner shares.

A meta-learner maps a batch of tasks to predictions for their query points:

``learner(support_x, support_y, query_x) -> logits [T, N*Q, N]``

with ``support_x [T, N*K, C, H, W]``, ``support_y [T, N*K]`` (labels ``0..N-1``) and
``query_x [T, N*Q, C, H, W]``. Black-box (a network reads the support set), optimisation-based
(an inner loop adapts parameters on the support set) and non-parametric (the support set is
compared with the queries) learners all fit it, so one training loop and one evaluation
serve them all: the loss is cross-entropy of the logits against ``query_y``.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MetaLearner", "check_task_batch"]


def check_task_batch(support_x: Tensor, support_y: Tensor, query_x: Tensor) -> None:
    """Validate the shapes of a batch of tasks; raise ``ValueError`` naming the culprit."""
    if support_x.dim() < 3:
        raise ValueError(f"support_x must be [T, N*K, ...], got shape {tuple(support_x.shape)}")
    if support_y.shape != support_x.shape[:2]:
        raise ValueError(
            f"support_y must be [T, N*K] = {tuple(support_x.shape[:2])} to match support_x, "
            f"got {tuple(support_y.shape)}"
        )
    if query_x.dim() != support_x.dim() or query_x.shape[0] != support_x.shape[0]:
        raise ValueError(
            f"query_x must be [T, N*Q, ...] with T = {support_x.shape[0]} and the same "
            f"per-example shape as support_x, got {tuple(query_x.shape)}"
        )
    if query_x.shape[2:] != support_x.shape[2:]:
        raise ValueError(
            f"query_x examples have shape {tuple(query_x.shape[2:])}, support_x examples "
            f"{tuple(support_x.shape[2:])}: they must match"
        )
    if support_y.is_floating_point():
        raise ValueError(f"support_y must hold integer labels 0..N-1, got dtype {support_y.dtype}")


class MetaLearner(nn.Module):
    """Base class: subclasses implement ``forward(support_x, support_y, query_x)``."""

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        raise NotImplementedError
