"""The two-task toy problem of CAGrad and Nash-MTL, every method's trajectory, the Pareto front.

Liu et al. (CAGrad, NeurIPS 2021, Figure 1) and Navon et al. (Nash-MTL, ICML 2022, Figure 1)
show why averaging conflicting gradients fails with two losses of a parameter
``theta = (x1, x2)`` in R^2 (the official code's ``Toy``):

    f1 = log(max(|0.5 (-x1 - 7) - tanh(-x2)|, 5e-6)) + 6
    f2 = log(max(|0.5 (-x1 + 3) + tanh(-x2) + 2|, 5e-6)) + 6
    g1 = ((-x1 + 7)^2 + 0.1 (-x2 - 8)^2) / 10 - 20
    g2 = ((-x1 - 7)^2 + 0.1 (-x2 - 8)^2) / 10 - 20
    c1 = max(tanh(x2 / 2), 0),   c2 = max(tanh(-x2 / 2), 0)
    L1 = c1 f1 + c2 g1,          L2 = c1 f2 + c2 g2

For ``x2 > 0`` the losses are two log-valleys; for ``x2 < 0`` two offset quadratic bowls. The
Pareto set is where neither loss can improve without the other getting worse.
:func:`pareto_points` finds the non-dominated points of a grid; :func:`trajectory` runs an
aggregator from a start point with Adam (the papers' optimiser); :func:`toy_figure` draws every
method's trajectories on the landscape of the mean loss with the Pareto set marked.
The papers start from ``(-8.5, 7.5)``, ``(0, 0)``, ``(9, 9)``, ``(-7.5, -0.5)`` and ``(9, -1)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from manytask.mtl.aggregators import Aggregator
from manytask.mtl.diagnostics._plot import figure

__all__ = ["TOY_STARTS", "pareto_points", "toy_figure", "toy_losses", "trajectory"]

TOY_STARTS: tuple[tuple[float, float], ...] = (
    (-8.5, 7.5), (0.0, 0.0), (9.0, 9.0), (-7.5, -0.5), (9.0, -1.0),
)  # fmt: skip
_LOWER = 5e-6


def toy_losses(theta: Tensor) -> Tensor:
    """``[..., 2] -> [..., 2]``: the two losses ``(L1, L2)`` at ``theta = (x1, x2)``.

    Example:
        >>> toy_losses(torch.tensor([0.0, 0.0])).tolist()   # c1 = c2 = 0 at x2 = 0
        [0.0, 0.0]
        >>> [round(v, 4) for v in toy_losses(torch.tensor([7.0, -8.0])).tolist()]  # tanh(4) x
        [-19.9866, -0.3997]
    """
    x1, x2 = theta[..., 0], theta[..., 1]
    f1 = (0.5 * (-x1 - 7) - torch.tanh(-x2)).abs().clamp_min(_LOWER).log() + 6
    f2 = (0.5 * (-x1 + 3) + torch.tanh(-x2) + 2).abs().clamp_min(_LOWER).log() + 6
    g1 = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    g2 = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    c1 = torch.tanh(x2 * 0.5).clamp_min(0)
    c2 = torch.tanh(-x2 * 0.5).clamp_min(0)
    return torch.stack([c1 * f1 + c2 * g1, c1 * f2 + c2 * g2], dim=-1)


def pareto_points(points: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
    """The non-dominated rows: ``points [N, 2]``, ``losses [N, 2]`` -> the Pareto subset of both.

    A row is dominated when another row is ``<=`` in both losses and ``<`` in one.

    Example:
        >>> L = torch.tensor([[1.0, 3.0], [2.0, 2.0], [2.5, 2.5], [3.0, 1.0]])
        >>> pareto_points(torch.arange(4.0).unsqueeze(1), L)[1].tolist()
        [[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]
    """
    order = torch.argsort(losses[:, 0] + 1e-9 * losses[:, 1])
    best2 = float("inf")
    keep = []
    for i in order.tolist():
        if float(losses[i, 1]) < best2:
            keep.append(i)
            best2 = float(losses[i, 1])
    idx = torch.tensor(sorted(keep))
    return points[idx], losses[idx]


def trajectory(
    aggregator: Aggregator,
    start: Sequence[float],
    *,
    steps: int = 2000,
    lr: float = 0.01,
    seed: int = 0,
) -> Tensor:
    """``[steps + 1, 2]`` the path of ``theta`` under Adam on the aggregated direction."""
    theta = torch.tensor(list(start), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    g = torch.Generator().manual_seed(seed)
    state = aggregator.init(2)
    path = [theta.detach().clone()]
    for _ in range(steps):
        losses = toy_losses(theta)
        rows = [torch.autograd.grad(losses[i], theta, retain_graph=i == 0)[0] for i in range(2)]
        direction, state = aggregator.update(
            torch.stack(rows), state, generator=g if aggregator.stochastic else None
        )
        opt.zero_grad()
        theta.grad = direction.detach()
        opt.step()
        path.append(theta.detach().clone())
    return torch.stack(path)


def toy_figure(paths: Mapping[str, Sequence[Tensor]], grid: int = 300) -> Any:
    """One panel per method: trajectories over the mean-loss landscape, Pareto set in black."""
    xs = torch.linspace(-10, 10, grid, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    pts = torch.stack([gx, gy], -1)
    losses = toy_losses(pts)
    pset, _ = pareto_points(pts.reshape(-1, 2), losses.reshape(-1, 2))
    n = len(paths)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig = figure(3.2 * cols, 3.0 * rows)
    mean = losses.mean(-1).numpy()
    for i, (name, runs) in enumerate(paths.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.contourf(gx.numpy(), gy.numpy(), mean, levels=30, cmap="viridis", alpha=0.8)
        ax.scatter(pset[:, 0].numpy(), pset[:, 1].numpy(), s=1.5, c="black", label="Pareto set")
        for path in runs:
            ax.plot(path[:, 0].numpy(), path[:, 1].numpy(), color="orange", linewidth=1.2)
            ax.plot(path[0, 0], path[0, 1], "o", color="white", markersize=3)
            ax.plot(path[-1, 0], path[-1, 1], "*", color="red", markersize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
        ax.tick_params(labelsize=7)
    fig.suptitle("Two-task toy problem (CAGrad / Nash-MTL): trajectories, Pareto set in black")
    fig.tight_layout()
    return fig
