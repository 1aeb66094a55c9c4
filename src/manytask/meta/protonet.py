"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017).

Each class ``k`` is represented by its prototype, the mean embedding of its support points
(eq. 1): ``c_k = 1/|S_k| sum_{x in S_k} f(x)``. A query ``x`` gets the class distribution
``p(y = k | x) = softmax_k(-d(f(x), c_k))`` (eq. 2) with ``d`` the squared Euclidean
distance, so the logits are the negative squared distances to the prototypes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from manytask.meta.base import MetaLearner, check_task_batch

__all__ = ["ProtoNet", "prototypes", "squared_distances"]


def prototypes(embeddings: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Class means of support embeddings.

    Args:
        embeddings: ``[T, N*K, D]`` support embeddings.
        labels: ``[T, N*K]`` labels in ``0..ways-1``.
        ways: number of classes ``N``.

    Returns:
        ``[T, N, D]`` prototypes (the mean of each class's support embeddings).
    """
    t, _, d = embeddings.shape
    sums = embeddings.new_zeros(t, ways, d).scatter_add_(
        1, labels.unsqueeze(-1).expand(-1, -1, d), embeddings
    )
    counts = torch.zeros(t, ways, dtype=embeddings.dtype, device=embeddings.device)
    counts.scatter_add_(1, labels, torch.ones_like(labels, dtype=embeddings.dtype))
    if bool((counts == 0).any()):
        raise ValueError(
            f"every class 0..{ways - 1} needs at least one support example in every task"
        )
    return sums / counts.unsqueeze(-1)


def squared_distances(queries: Tensor, protos: Tensor) -> Tensor:
    """``||q - c||^2`` for every query and prototype: ``[T, M, D], [T, N, D] -> [T, M, N]``."""
    q2 = queries.pow(2).sum(-1, keepdim=True)
    c2 = protos.pow(2).sum(-1).unsqueeze(1)
    return (q2 - 2.0 * queries @ protos.transpose(1, 2) + c2).clamp_min(0.0)


class ProtoNet(MetaLearner):
    """Prototypical Network over any encoder ``[B, C, H, W] -> [B, D]``.

    Args:
        encoder: the embedding network ``f`` (e.g. :class:`manytask.nn.Conv4`).

    Call it with ``ways`` (the number of classes ``N``) whenever it is known; without it the
    labels' maximum is read, which costs a device sync.

    Example:
        >>> from manytask.nn import Conv4
        >>> learner = ProtoNet(Conv4())
        >>> sx, qx = torch.rand(2, 5, 1, 28, 28), torch.rand(2, 10, 1, 28, 28)
        >>> sy = torch.arange(5).repeat(2, 1)
        >>> learner(sx, sy, qx, ways=5).shape
        torch.Size([2, 10, 5])
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None
    ) -> Tensor:
        if check_task_batch(support_x, support_y, query_x, ways) != "classification":
            raise ValueError("ProtoNet classifies: support_y must hold integer labels [T, N*K]")
        t, ns = support_x.shape[:2]
        nq = query_x.shape[1]
        # One encoder pass over support and query of every task (batch norm sees them together,
        # as in the reference implementation).
        flat = torch.cat([support_x.flatten(0, 1), query_x.flatten(0, 1)])
        z = self.encoder(flat)
        zs = z[: t * ns].view(t, ns, -1).float()
        zq = z[t * ns :].view(t, nq, -1).float()
        ways = self.ways_of(support_y, ways)
        # Distances in fp32 even under autocast: ||q||^2 - 2 q.c + ||c||^2 cancels badly in bf16.
        with torch.autocast(z.device.type, enabled=False):
            return -squared_distances(zq, prototypes(zs, support_y, ways))
