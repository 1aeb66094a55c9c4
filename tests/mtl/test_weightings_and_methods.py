"""Loss weightings against their papers' formulas; gradient methods end to end on a model;
a resumed training loop ends bit-identical for every registered method."""

from __future__ import annotations

import io
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from manytask.mtl import MethodState, StepInfo
from manytask.mtl.aggregators import MGDA, PCGrad
from manytask.mtl.gradient_methods import MGDAUBMethod, PCGradMethod, pairwise_cosines
from manytask.mtl.jacobian import task_jacobian
from manytask.mtl.weightings import DWA, FAMO, RLW, GradNorm, UncertaintyWeighting
from manytask.mtl.weightings.gradnorm import gradnorm_gradient
from manytask.nn.backbones import MLP
from manytask.nn.conditioning import MultiHead
from manytask.registry import MTL_METHODS

# -- weightings -------------------------------------------------------------------------------


def test_uncertainty_log_variances_converge_to_the_log_loss():
    """For fixed losses, 1/2 exp(-s) L + 1/2 s is minimal at s = log L (weight 1 / (2L))."""
    m = UncertaintyWeighting(lr=0.05)
    state = m.init(2)
    losses = torch.tensor([4.0, 0.25])
    for step in range(3000):
        w, state = m.weights(losses, state, StepInfo.all_tasks(2, step))
    torch.testing.assert_close(state["log_var"]["value"], losses.double().log(), atol=1e-3, rtol=0)
    torch.testing.assert_close(w, 1 / (2 * losses), atol=1e-3, rtol=0)


def test_dwa_formula_and_periods():
    m = DWA(temperature=2.0, period=2)
    state = m.init(2)
    seq = [[4.0, 1.0], [4.0, 1.0], [2.0, 1.0], [2.0, 1.0], [1.0, 2.0], [1.0, 2.0]]
    ws = []
    for step, loss in enumerate(seq):
        w, state = m.weights(torch.tensor(loss), state, StepInfo.all_tasks(2, step))
        ws.append(w)
    # the first two periods: 1; then r = mean of period 1 / mean of period 0 = (0.5, 1)
    assert all(torch.equal(w, torch.ones(2)) for w in ws[:4])
    r = torch.tensor([0.5, 1.0])
    torch.testing.assert_close(ws[4], 2 * torch.softmax(r / 2.0, 0))
    with pytest.raises(ValueError, match="temperature"):
        DWA(temperature=0)


def test_rlw_weights_are_random_softmax_normals():
    m = RLW(seed=3)
    state = m.init(4)
    ws = []
    for _ in range(2000):
        w, state = m.weights(torch.zeros(4), state, StepInfo.all_tasks(4))
        ws.append(w)
    ws_t = torch.stack(ws)
    torch.testing.assert_close(ws_t.sum(1), torch.ones(2000))
    assert abs(float(ws_t.mean()) - 0.25) < 0.01 and float(ws_t.std(0).min()) > 0.05
    g = torch.Generator().manual_seed(3)
    torch.testing.assert_close(
        ws[0], torch.softmax(torch.randn(4, generator=g, dtype=torch.float64), 0).float()
    )
    d = RLW("dirichlet", seed=1)
    w, _ = d.weights(torch.zeros(3), d.init(3), StepInfo.all_tasks(3))
    assert abs(float(w.sum()) - 1) < 1e-6


def test_famo_weights_and_logit_update_follow_algorithm_1():
    m = FAMO(lr=0.1, gamma=0.0)
    state, info = m.init(3), StepInfo.all_tasks(3)
    before = torch.tensor([1.0, 2.0, 4.0])
    w, state = m.weights(before, state, info)
    z = torch.full((3,), 1 / 3, dtype=torch.float64)
    c = 1 / (z / before.double()).sum()
    torch.testing.assert_close(w, (c * z / before.double()).float())
    after = torch.tensor([0.5, 2.0, 4.0])  # only task 0 improved
    state = m.after_step(after, state, info)
    delta = before.double().log() - after.double().log()
    grad = z * (delta - (z * delta).sum())
    # first Adam step moves by lr * sign(grad)
    torch.testing.assert_close(state["logits"]["value"], -0.1 * torch.sign(grad), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=">= 0"):
        m.weights(torch.tensor([-1.0, 1.0, 1.0]), state, info)


def test_gradnorm_gradient_and_renormalisation():
    w = torch.tensor([1.0, 1.0], dtype=torch.float64)
    norms = torch.tensor([2.0, 1.0], dtype=torch.float64)
    # task 0 trains slower (higher loss ratio): its target norm is higher
    losses, initial = (
        torch.tensor([1.0, 0.5], dtype=torch.float64),
        torch.ones(2, dtype=torch.float64),
    )
    g = gradnorm_gradient(w, norms, losses, initial, alpha=1.0)
    r = (losses / initial) / (losses / initial).mean()
    target = (w * norms).mean() * r
    torch.testing.assert_close(g, torch.sign(w * norms - target) * norms)
    torch.manual_seed(0)
    model = MultiHead(partial(MLP, 5, hidden=(6,)), (5,), (2, 2, 2))
    method = GradNorm(lr=0.1)
    state = method.init(3)
    x = torch.randn(9, 5)
    y = torch.randint(0, 2, (9,))
    for step in range(3):
        model.zero_grad(set_to_none=True)
        with method.forward_context(model, [3, 3, 3]):
            outs = model.forward_tasks([x[:3], x[3:6], x[6:]], [0, 1, 2])
            losses = torch.stack(
                [F.cross_entropy(o, y[3 * i : 3 * i + 3]) for i, o in enumerate(outs)]
            )
        _logs, state = method.backward(losses, model, state, StepInfo.all_tasks(3, step))
    assert method._capture.last_path == "segments"
    torch.testing.assert_close(
        state["weights"]["value"].sum(), torch.tensor(3.0, dtype=torch.float64)
    )
    assert not torch.equal(state["weights"]["value"], torch.ones(3, dtype=torch.float64))


# -- gradient methods on a real model ---------------------------------------------------------


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, 6, generator=g) for n in (4, 3, 5)]
    ys = [
        torch.randint(0, c, (x.shape[0],), generator=g) for x, c in zip(xs, (3, 2, 4), strict=True)
    ]
    return xs, ys


def _model():
    torch.manual_seed(0)
    return MultiHead(partial(MLP, 6, hidden=(8, 8)), (6,), (3, 2, 4))


def _losses(model, xs, ys, tasks=(0, 1, 2)):
    outs = model.forward_tasks([xs[t] for t in tasks], list(tasks))
    return torch.stack([F.cross_entropy(o, ys[t]) for o, t in zip(outs, tasks, strict=True)])


def test_gradient_method_writes_the_aggregated_direction_and_own_head_gradients():
    model = _model()
    xs, ys = _batch()
    shared = list(model.shared_parameters())
    losses = _losses(model, xs, ys)
    ref_j = task_jacobian(losses, shared, retain_graph=True)
    ref_heads = torch.autograd.grad(losses[1], list(model.task_parameters(1)))
    method = PCGradMethod(seed=4)
    state = method.init(3)
    with method.forward_context(model, [4, 3, 5]):
        losses = _losses(model, xs, ys)
    logs, state = method.backward(losses, model, state, StepInfo.all_tasks(3))
    assert method._capture.last_path == "segments"
    g = torch.Generator().manual_seed(4)
    direction = PCGrad()(ref_j, generator=g)
    torch.testing.assert_close(
        torch.cat([p.grad.flatten() for p in shared]), direction, atol=1e-6, rtol=1e-5
    )
    for p, r in zip(model.task_parameters(1), ref_heads, strict=True):
        torch.testing.assert_close(p.grad, r)
    cos = pairwise_cosines((ref_j @ ref_j.T).double())
    off = ~torch.eye(3, dtype=torch.bool)
    torch.testing.assert_close(logs["grad_cosine"].double(), cos[off].mean(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state["cos_sum"], cos, atol=1e-5, rtol=1e-5)
    assert torch.equal(state["cos_count"], torch.ones(3, 3, dtype=torch.float64))


def test_mgda_ub_weights_come_from_the_representation():
    model = _model()
    xs, ys = _batch()
    method = MGDAUBMethod()
    state = method.init(3)
    with method.forward_context(model, [4, 3, 5]):
        losses = _losses(model, xs, ys)
    z = model.shared_representation(torch.cat(xs))
    ref_losses = torch.stack(
        [
            F.cross_entropy(model.forward_representation(z[s:e], t), ys[t])
            for t, (s, e) in enumerate([(0, 4), (4, 7), (7, 12)])
        ]
    )
    jz = task_jacobian(ref_losses, [z], retain_graph=True)
    w, _ = MGDA().weights((jz @ jz.T).double())
    ref = torch.autograd.grad((w.float() * ref_losses).sum(), list(model.shared_parameters()))
    logs, state = method.backward(losses, model, state, StepInfo.all_tasks(3))
    torch.testing.assert_close(logs["weight"], w.float(), atol=1e-6, rtol=1e-5)
    for p, r in zip(model.shared_parameters(), ref, strict=True):
        torch.testing.assert_close(p.grad, r, atol=1e-6, rtol=1e-5)


# -- resume: every registered method ends bit-identical --------------------------------------


def _train(name: str, steps: int, resume_at: int | None) -> list[torch.Tensor]:
    model = _model()
    method = MTL_METHODS.get(name)(
        **(
            {"task_names": ("a", "b", "c"), "task_weights": (1.0, 1.0, 1.0)}
            if MTL_METHODS.takes(name, "task_names")
            else {}
        )
    )
    part = MethodState(method, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        tasks = torch.randperm(3, generator=g)[:2].sort().values.tolist()
        xs, ys = _batch(step)
        info = StepInfo(torch.tensor(tasks), 3, step)
        opt.zero_grad(set_to_none=True)
        context = getattr(method, "forward_context", None)
        segments = [xs[t].shape[0] for t in tasks]
        if context is not None:
            with context(model, segments):
                losses = _losses(model, xs, ys, tasks)
        else:
            losses = _losses(model, xs, ys, tasks)
        part.backward(losses, model, info)
        opt.step()
        if method.needs_losses_after_step:
            with torch.no_grad():
                part.after_step(_losses(model, xs, ys, tasks), info)
        if step + 1 == resume_at:
            buf = io.BytesIO()
            torch.save(
                {"model": model.state_dict(), "opt": opt.state_dict(), "method": part.state_dict()},
                buf,
            )
            buf.seek(0)
            saved = torch.load(buf, weights_only=True)
            model = _model()
            model.load_state_dict(saved["model"])
            method = MTL_METHODS.get(name)(
                **(
                    {"task_names": ("a", "b", "c"), "task_weights": (1.0, 1.0, 1.0)}
                    if MTL_METHODS.takes(name, "task_names")
                    else {}
                )
            )
            part = MethodState(method, 3)
            part.load_state_dict(saved["method"])
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            opt.load_state_dict(saved["opt"])
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", MTL_METHODS.names())
def test_a_resumed_training_ends_bit_identical(name):
    straight = _train(name, 4, None)
    resumed = _train(name, 4, 2)
    for a, b in zip(straight, resumed, strict=True):
        assert torch.equal(a, b), name
    assert all(torch.isfinite(a).all() for a in straight)


@pytest.mark.slow
def test_toy_sanity_every_method_lowers_every_loss_a_little():
    """A few steps of every method on a tiny problem: all losses fall (nothing is upside down)."""
    for name in MTL_METHODS.names():
        model = _model()
        xs, ys = _batch(0)
        before = _losses(model, xs, ys).detach()
        _trained = _train_fixed_batch(name, model, xs, ys, steps=20)
        after = _losses(_trained, xs, ys).detach()
        assert float(after.sum()) < float(before.sum()), (name, before, after)
        assert math.isfinite(float(after.sum()))


def _train_fixed_batch(name, model, xs, ys, steps):
    kwargs = (
        {"task_names": ("a", "b", "c"), "task_weights": (1.0, 1.0, 1.0)}
        if MTL_METHODS.takes(name, "task_names")
        else {}
    )
    method = MTL_METHODS.get(name)(**kwargs)
    state = method.init(3)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for step in range(steps):
        info = StepInfo.all_tasks(3, step)
        opt.zero_grad(set_to_none=True)
        context = getattr(method, "forward_context", None)
        if context is not None:
            with context(model, [4, 3, 5]):
                losses = _losses(model, xs, ys)
        else:
            losses = _losses(model, xs, ys)
        _, state = method.backward(losses, model, state, info)
        opt.step()
        if method.needs_losses_after_step:
            with torch.no_grad():
                state = method.after_step(_losses(model, xs, ys), state, info)
    return model
