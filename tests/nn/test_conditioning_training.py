"""Every conditioning model learns a tiny synthetic multi-task problem well above chance.

Three related tasks of three kinds on one hidden structure ``s_t = B_t tanh(2 A x / sqrt(8))``
(``A`` shared, ``B_t`` per task): 3-way classification (``argmax s_0``), binary
classification (``s_1 > 0``) and 2-d regression (``s_2 / 3``); 256 training and 256 test
examples per task, each task with its own inputs; 100 full-batch Adam steps on the sum of
cross-entropy, BCE and MSE through ``forward_tasks``. A fraction of a second per model.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conditioning_cases import Task
from torch import Tensor

from manytask.nn import CONDITIONING, build_conditioning, init_parameters

TASKS = (Task("cls", "multiclass", 3), Task("bin", "binary", 1), Task("reg", "regression", 2))
ARGS = {"mmoe": {"num_experts": 2}, "ple": {"upper_width": 16}}


def _problem(seed: int, n: int = 256) -> tuple[tuple[list[Tensor], list[Tensor]], ...]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(6, 8, generator=g)
    b = [torch.randn(c, 6, generator=g) * 3 for c in (3, 1, 2)]

    def draw() -> tuple[list[Tensor], list[Tensor]]:
        xs, ys = [], []
        for t in range(3):
            x = torch.randn(n, 8, generator=g)
            s = torch.tanh(2 * x @ a.T / 8**0.5) @ b[t].T
            ys.append(s.argmax(1) if t == 0 else (s[:, 0] > 0).float() if t == 1 else s / 3)
            xs.append(x)
        return xs, ys

    return draw(), draw()


def _losses(outs: list[Tensor], ys: list[Tensor]) -> Tensor:
    return (
        F.cross_entropy(outs[0], ys[0])
        + F.binary_cross_entropy_with_logits(outs[1][:, 0], ys[1])
        + F.mse_loss(outs[2], ys[2])
    )


def _scores(model: torch.nn.Module, xs: list[Tensor], ys: list[Tensor]) -> tuple[float, ...]:
    model.eval()
    with torch.no_grad():
        o = model.forward_tasks(xs, [0, 1, 2])
    model.train()
    acc = (o[0].argmax(1) == ys[0]).float().mean().item()
    bacc = ((o[1][:, 0] > 0).float() == ys[1]).float().mean().item()
    r2 = 1 - ((o[2] - ys[2]) ** 2).sum().item() / ((ys[2] - ys[2].mean(0)) ** 2).sum().item()
    return acc, bacc, r2


@pytest.mark.parametrize("name", list(CONDITIONING))
def test_trains_well_above_chance(name: str) -> None:
    (xtr, ytr), (xte, yte) = _problem(0)
    model = build_conditioning(
        name, TASKS, (8,), backbone_args={"hidden": (32, 32)}, **ARGS.get(name, {})
    )
    init_parameters(model, 0)
    _, _, r2_before = _scores(model, xte, yte)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        loss = _losses(model.forward_tasks(xtr, [0, 1, 2]), ytr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc, bacc, r2 = _scores(model, xte, yte)
    majority = torch.bincount(yte[0]).max().item() / len(yte[0])
    majority_bin = max(yte[1].mean().item(), 1 - yte[1].mean().item())
    assert r2_before < 0.5  # an untrained model does not already solve it
    assert acc > majority + 0.3, (acc, majority)
    assert bacc > majority_bin + 0.3, (bacc, majority_bin)
    assert r2 > 0.85, r2
