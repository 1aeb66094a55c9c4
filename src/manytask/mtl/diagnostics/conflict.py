"""Gradient conflict: pairwise cosine similarities of the task gradients, over training.

Two tasks *conflict* at a step when their gradients on the shared parameters point in opposite
directions, ``cos(g_i, g_j) < 0`` (Yu et al. 2020 call it the first ingredient of the "tragic
triad"): a step for one raises the other's loss to first order. Every gradient method of
:mod:`manytask.mtl.gradient_methods` reads the cosines off the Gramian it already has and adds
them to running sums in its state (``cos_sum``, ``cos_count`` ``[K, K]``), and logs per step the
mean cosine over pairs (``grad_cosine``) and the fraction of conflicting pairs
(``grad_conflict``). This module turns them into a heatmap (the mean over training) and a curve
(over steps). For one Jacobian, :func:`gradient_cosines`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from manytask.mtl.diagnostics._plot import figure

__all__ = ["conflict_curve", "conflict_heatmap", "gradient_cosines", "mean_cosines"]


def gradient_cosines(jacobian: Tensor) -> Tensor:
    """``[K, K]`` cosine similarities of the rows of ``jacobian`` ``[K, P]`` (0 for zero rows).

    Example:
        >>> gradient_cosines(torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, 0.0]]))
        tensor([[ 1.0000, -0.7071,  0.0000],
                [-0.7071,  1.0000,  0.0000],
                [ 0.0000,  0.0000,  0.0000]])
    """
    norms = jacobian.norm(dim=1)
    unit = jacobian / torch.where(norms > 0, norms, torch.ones_like(norms)).unsqueeze(1)
    return (unit @ unit.T).clamp(-1.0, 1.0)


def mean_cosines(cos_sum: Tensor, cos_count: Tensor) -> Tensor:
    """The mean cosine of every pair over the steps both tasks were in (NaN if never).

    Example:
        >>> mean_cosines(torch.tensor([[2.0, -1.0], [-1.0, 2.0]]), torch.full((2, 2), 2.0))
        tensor([[ 1.0000, -0.5000],
                [-0.5000,  1.0000]])
    """
    s, c = cos_sum.to(torch.float64), cos_count.to(torch.float64)
    return torch.where(c > 0, s / c.clamp_min(1), torch.full_like(s, float("nan"))).float()


def conflict_heatmap(cosines: Tensor, names: Sequence[str], title: str = "") -> Any:
    """A heatmap figure of a ``[K, K]`` cosine matrix (red: conflict, blue: agreement)."""
    k = cosines.shape[0]
    size = min(2.0 + 0.35 * k, 14.0)
    fig = figure(size + 1.2, size)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(cosines.numpy(), cmap="RdBu", vmin=-1.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="mean cosine similarity of task gradients")
    ax.set_xticks(range(k), labels=list(names), rotation=90, fontsize=7 if k > 12 else 9)
    ax.set_yticks(range(k), labels=list(names), fontsize=7 if k > 12 else 9)
    if k <= 12:
        for i in range(k):
            for j in range(k):
                v = float(cosines[i, j])
                if v == v:
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    ax.set_title(title or "Gradient conflict (mean over training)")
    fig.tight_layout()
    return fig


def conflict_curve(
    steps: Sequence[int], mean_cosine: Sequence[float], conflict: Sequence[float]
) -> Any:
    """A figure of the mean pairwise cosine and the fraction of conflicting pairs over steps."""
    fig = figure(7.0, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    mark = {"marker": "o", "markersize": 3}  # a short run may have one log line
    ax.plot(list(steps), list(mean_cosine), label="mean cosine over task pairs", **mark)
    ax.plot(list(steps), list(conflict), label="fraction of pairs in conflict (cos < 0)", **mark)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("step")
    ax.set_ylim(-1.05, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("Gradient conflict over training")
    fig.tight_layout()
    return fig
