"""Fixed weights and min-max against their definitions (gradients by autograd of the formula)."""

from __future__ import annotations

import math

import pytest
import torch

from manytask.mtl import FixedWeights, MinMax, StepInfo, minmax_objective


def _losses(theta: torch.Tensor) -> torch.Tensor:
    # Three tasks of different scales, all reaching the same parameters.
    return torch.stack([(theta - 1).pow(2).sum(), 3 * (theta + 2).pow(2).sum(), theta.sum().exp()])


def _grad_of(fn, theta0: torch.Tensor) -> torch.Tensor:
    theta = theta0.clone().requires_grad_(True)
    fn(_losses(theta)).backward()
    return theta.grad


def _method_grad(method, theta0: torch.Tensor, tasks=(0, 1, 2)) -> tuple[torch.Tensor, dict]:
    theta = theta0.clone().requires_grad_(True)
    info = StepInfo(torch.tensor(tasks), 3, 0)
    losses = _losses(theta)[list(tasks)]
    logs, _ = method.backward(losses, None, method.init(3), info)
    return theta.grad, logs


THETA = torch.tensor([0.3, -0.2])


def test_fixed_weights_give_the_weighted_sum_gradient():
    w = [0.5, 2.0, 1.5]
    grad, logs = _method_grad(FixedWeights(w), THETA)
    want = _grad_of(lambda L: (torch.tensor(w) * L).sum(), THETA)
    torch.testing.assert_close(grad, want)
    assert logs["weight"].tolist() == w
    torch.testing.assert_close(logs["objective"], (torch.tensor(w) * _losses(THETA)).sum())


def test_fixed_weights_follow_the_sampled_tasks_and_the_specs():
    m = FixedWeights({"c": 4.0}, task_names=("a", "b", "c"), task_weights=(1.0, 0.5, 1.0))
    assert m.resolved(3) == [1.0, 0.5, 4.0]
    grad, logs = _method_grad(m, THETA, tasks=(2, 1))
    assert logs["weight"].tolist() == [4.0, 0.5]
    want = _grad_of(lambda L: 4.0 * L[2] + 0.5 * L[1], THETA)
    torch.testing.assert_close(grad, want)
    assert FixedWeights(task_weights=(2.0, 1.0, 1.0)).resolved(3) == [2.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": [1.0, -1.0]}, "finite and >= 0"),
        ({"weights": [0.0, 0.0]}, "at least one weight"),
        ({"weights": [1.0, float("nan")]}, "finite"),
        ({"weights": {"x": 1.0}, "task_names": ("a", "b")}, "does not have; its tasks are a, b"),
        ({"weights": "1,2"}, "must be numbers"),
    ],
)
def test_fixed_weights_reject_bad_weights(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FixedWeights(**kwargs)


def test_fixed_weights_of_the_wrong_length_fail_at_init():
    with pytest.raises(ValueError, match="2 weights for 3 tasks"):
        FixedWeights([1.0, 2.0]).init(3)


def test_hard_minmax_follows_only_the_worst_task():
    losses = _losses(THETA)
    worst = int(losses.argmax())
    grad, logs = _method_grad(MinMax(), THETA)
    torch.testing.assert_close(grad, _grad_of(lambda L: L[worst], THETA))
    assert logs["weight"].tolist() == [float(i == worst) for i in range(3)]
    torch.testing.assert_close(logs["objective"], losses.max())


def test_smoothed_minmax_is_the_log_sum_exp_of_its_definition():
    T = 0.7
    losses = _losses(THETA)
    grad, logs = _method_grad(MinMax(temperature=T), THETA)
    want_value = T * math.log(sum(math.exp(v / T) for v in losses.tolist()) / 3)
    assert logs["objective"].item() == pytest.approx(want_value, rel=1e-6)
    want = _grad_of(lambda L: T * torch.log(torch.exp(L / T).mean()), THETA)
    torch.testing.assert_close(grad, want)
    # The same gradient as the losses weighted by softmax(L / T).
    torch.testing.assert_close(logs["weight"], torch.softmax(losses / T, 0))
    torch.testing.assert_close(
        grad, _grad_of(lambda L: (torch.softmax(L.detach() / T, 0) * L).sum(), THETA)
    )


def test_smoothed_minmax_lies_between_the_mean_and_the_max():
    L = torch.tensor([0.2, 1.0, 3.0])
    for T in (1e-3, 0.1, 1.0, 10.0, 1e4):
        v = minmax_objective(L, T).item()
        assert L.mean().item() - 1e-5 <= v <= L.max().item() + 1e-6
    assert minmax_objective(L, 1e-3).item() == pytest.approx(3.0, abs=1e-2)
    assert minmax_objective(L, 1e4).item() == pytest.approx(L.mean().item(), abs=1e-3)


def test_hard_minmax_splits_a_tie():
    w = torch.ones(2, requires_grad=True)
    losses = torch.stack([w[0] * 2, w[1] * 2])
    logs, _ = MinMax().backward(losses, None, {}, StepInfo.all_tasks(2))
    assert logs["weight"].tolist() == [0.5, 0.5]
    assert w.grad.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), "hot", True])
def test_minmax_rejects_bad_temperatures(bad):
    with pytest.raises(ValueError, match="temperature"):
        MinMax(temperature=bad)


def test_losses_must_match_the_step():
    with pytest.raises(ValueError, match="one loss per task"):
        MinMax().backward(torch.ones(2, requires_grad=True), None, {}, StepInfo.all_tasks(3))
