"""Diagnostics: the toy problem's definition and Pareto set, TAG affinities and groupings,
the negative-transfer statistics, gradient cosines and their figures."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from manytask.mtl.aggregators import MGDA, Mean
from manytask.mtl.diagnostics import (
    TaskAffinity,
    conflict_curve,
    conflict_heatmap,
    gradient_cosines,
    group_tasks,
    grouping_score,
    lookahead_affinity,
    mean_cosines,
    negative_transfer,
    pareto_points,
    png,
    toy_figure,
    toy_losses,
    trajectory,
    transfer_table,
)
from manytask.mtl.jacobian import task_jacobian


def test_toy_problem_is_the_papers_definition():
    """CAGrad's and Nash-MTL's two losses, written out once more from the formula."""
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(50, 2, generator=g, dtype=torch.float64) * 20 - 10
    for x1, x2 in pts.tolist():
        f1 = math.log(max(abs(0.5 * (-x1 - 7) - math.tanh(-x2)), 5e-6)) + 6
        f2 = math.log(max(abs(0.5 * (-x1 + 3) + math.tanh(-x2) + 2), 5e-6)) + 6
        g1 = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
        g2 = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
        c1, c2 = max(math.tanh(x2 / 2), 0), max(math.tanh(-x2 / 2), 0)
        got = toy_losses(torch.tensor([x1, x2], dtype=torch.float64)).tolist()
        assert got == pytest.approx([c1 * f1 + c2 * g1, c1 * f2 + c2 * g2], abs=1e-12)


def test_pareto_points_are_exactly_the_non_dominated_ones():
    g = torch.Generator().manual_seed(1)
    losses = torch.rand(60, 2, generator=g)
    _, front = pareto_points(torch.arange(60.0).unsqueeze(1), losses)
    brute = [
        row
        for row in losses.tolist()
        if not any(
            o[0] <= row[0] and o[1] <= row[1] and (o[0] < row[0] or o[1] < row[1])
            for o in losses.tolist()
        )
    ]
    assert sorted(front.tolist()) == sorted(brute)


def test_toy_trajectories_and_figure():
    mgda = trajectory(MGDA(), (-8.5, 7.5), steps=30, lr=0.05)
    mean = trajectory(Mean(), (-8.5, 7.5), steps=30, lr=0.05)
    assert mgda.shape == (31, 2) and torch.isfinite(mgda).all()
    # both move downhill on their objective from the start
    assert float(toy_losses(mean[-1]).mean()) < float(toy_losses(mean[0]).mean())
    data = png(toy_figure({"MGDA": [mgda], "Mean": [mean]}, grid=40), dpi=40)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_lookahead_affinity_matches_its_definition():
    torch.manual_seed(0)
    trunk, heads = nn.Linear(4, 5), nn.ModuleList(nn.Linear(5, 1) for _ in range(3))
    x = [torch.randn(6, 4) for _ in range(3)]
    y = [torch.randn(6, 1) for _ in range(3)]
    names = [n for n, _ in trunk.named_parameters()]

    def losses_at(params):
        p = dict(zip(names, params, strict=True))
        return torch.stack(
            [F.mse_loss(heads[i](functional_call(trunk, p, (x[i],))), y[i]) for i in range(3)]
        )

    shared = list(trunk.parameters())
    losses = losses_at(shared)
    jac = task_jacobian(losses, shared)
    z = lookahead_affinity(losses_at, shared, jac, lr=0.1)
    for i in range(3):
        moved = []
        start = 0
        for p in shared:
            moved.append((p - 0.1 * jac[i, start : start + p.numel()].view_as(p)).detach())
            start += p.numel()
        with torch.no_grad():
            after = losses_at(moved)
        torch.testing.assert_close(z[i], (1 - after / losses.detach()).float())
    # a task's own step lowers its own loss (small lr): positive diagonal
    assert torch.all(z.diagonal() > 0)
    acc = TaskAffinity()
    state = acc.update(z, acc.init(3))
    state = acc.update(z[:2, :2] * 0, state, tasks=torch.tensor([0, 1]))
    torch.testing.assert_close(acc.mean(state)[:2, :2], z[:2, :2] / 2)
    torch.testing.assert_close(acc.mean(state)[2], z[2])


def test_group_tasks_is_exact_for_small_k():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(6, 6, generator=g)
    best = group_tasks(z, max_groups=3)
    # brute force over labelings
    top = -math.inf
    for labels in itertools.product(range(3), repeat=6):
        groups = [[t for t in range(6) if labels[t] == c] for c in range(3)]
        top = max(top, grouping_score(z, [gr for gr in groups if gr]))
    assert best.score == pytest.approx(top)
    assert len(best.groups) <= 3 and sorted(t for g_ in best.groups for t in g_) == list(range(6))
    assert best.named([f"t{i}" for i in range(6)])[0][0].startswith("t")
    big = group_tasks(torch.randn(12, 12, generator=g))
    assert sorted(t for g_ in big.groups for t in g_) == list(range(12))
    with pytest.raises(ValueError, match="square"):
        group_tasks(torch.zeros(2, 3))


def test_negative_transfer_statistics():
    multi = {"a": [1.0, 2.0, 3.0]}
    single = {"a": [2.0, 3.0, 4.0, 5.0]}
    (row,) = negative_transfer(multi, single, metric="mse", higher_is_better=False)
    # lower is better: gain = single mean - multi mean = 3.5 - 2 = 1.5
    assert row.gain == pytest.approx(1.5)
    a, b = 1.0 / 3, (5 / 3) / 4
    df = (a + b) ** 2 / (a * a / 2 + b * b / 3)
    assert 4 < df < 5  # t(4) = 2.776, rounded down (conservative)
    assert row.ci95 == pytest.approx(2.776 * math.sqrt(a + b))
    assert row.verdict == "unclear"
    (one,) = negative_transfer({"a": [0.5]}, {"a": [0.6]}, metric="acc", higher_is_better=True)
    assert one.verdict == "worse?" and math.isnan(one.ci95)
    assert "**worse?**" in transfer_table([one])
    with pytest.raises(ValueError, match="no single-task baseline"):
        negative_transfer({"b": [1.0]}, {}, metric="acc", higher_is_better=True)


def test_gradient_cosines_and_figures():
    j = torch.randn(4, 9, generator=torch.Generator().manual_seed(0))
    cos = gradient_cosines(j)
    ref = F.cosine_similarity(j.unsqueeze(1), j.unsqueeze(0), dim=-1)
    torch.testing.assert_close(cos, ref)
    mean = mean_cosines(cos.double() * 3, torch.full((4, 4), 3.0))
    torch.testing.assert_close(mean, cos)
    assert torch.isnan(mean_cosines(torch.zeros(2, 2), torch.zeros(2, 2))).all()
    assert png(conflict_heatmap(cos, list("abcd")), dpi=40)[:4] == b"\x89PNG"
    assert png(conflict_curve([1, 2], [0.1, -0.2], [0.0, 0.5]), dpi=40)[:4] == b"\x89PNG"
