"""MAML, first-order MAML, Meta-SGD, ANIL and Reptile against references written here.

Each reference is a naive per-task loop over a small conv net with batch norm, written with
``torch.nn.functional`` ops and ``torch.autograd.grad(create_graph=True)``, independently of
``manytask.meta.functional``. Meta-gradients are compared in float64 to a relative 1e-5 (they
agree to ~1e-14), for the grouped backend (every task in one call), the per-task network and
the functional_call loop.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from manytask.meta import ANIL, MAML, GroupedNet, LoopNet, MetaSGD, Reptile, per_task
from manytask.nn import MLP, Conv4, init_parameters

T, N, K, Q = 3, 3, 2, 2
SIDE = 8


def encoder() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
    )  # fmt: skip


def naive_net(p: dict[str, Tensor], x: Tensor, stats: Tensor | None = None) -> Tensor:
    """The learner's network for ONE task, by hand; batch norm statistics from ``stats``
    rows of ``x`` (all rows when None)."""

    def bn(h: Tensor, i: int, rows: int | None) -> Tensor:
        ref = h if rows is None else h[:rows]
        mean = ref.mean((0, 2, 3), keepdim=True)
        var = ((ref - mean) ** 2).mean((0, 2, 3), keepdim=True)
        w, b = p[f"encoder.{i}.weight"], p[f"encoder.{i}.bias"]
        return (h - mean) / torch.sqrt(var + 1e-5) * w[:, None, None] + b[:, None, None]

    rows = None if stats is None else int(stats)
    h = F.conv2d(x, p["encoder.0.weight"], p["encoder.0.bias"], padding=1)
    h = F.max_pool2d(F.relu(bn(h, 1, rows)), 2)
    h = F.conv2d(h, p["encoder.4.weight"], p["encoder.4.bias"], padding=1)
    h = F.max_pool2d(F.relu(bn(h, 5, rows)), 2)
    return h.flatten(1) @ p["head.weight"].T + p["head.bias"]


def batch(seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(T, N * K, 1, SIDE, SIDE, generator=g, dtype=dtype)
    sy = torch.stack([torch.randperm(N * K, generator=g) % N for _ in range(T)])
    qx = torch.randn(T, N * Q, 1, SIDE, SIDE, generator=g, dtype=dtype)
    qy = torch.stack([torch.randperm(N * Q, generator=g) % N for _ in range(T)])
    return sx, sy, qx, qy


def make(cls, seed: int = 0, **kw):
    learner = cls(encoder(), in_shape=(1, SIDE, SIDE), ways=N, **kw)
    return init_parameters(learner, seed).double()


def meta_gradient(learner, sx, sy, qx, qy) -> dict[str, Tensor]:
    learner.zero_grad(set_to_none=True)
    logits = learner(sx, sy, qx, ways=N)
    loss = sum(F.cross_entropy(logits[i], qy[i]) for i in range(T))
    learner.outer_backward(loss)
    return {n: p.grad.clone() for n, p in learner.named_parameters()}


def assert_close_rel(got: dict[str, Tensor], want: dict[str, Tensor], tol: float = 1e-5) -> None:
    """Each gradient within ``tol`` of the reference, relative to the largest reference entry."""
    scale = max(w.abs().max().item() for w in want.values())
    assert scale > 0
    for name, w in want.items():
        err = (got[name] - w).abs().max().item() / scale
        assert err < tol, f"{name}: relative error {err:.2e}"


def reference(learner, sx, sy, qx, qy, *, steps, lr, order, adapt=None, stats=False):
    """The meta-gradient by an explicit loop over tasks (eq. 1-3 of Finn et al. 2017)."""
    theta = dict(learner.named_theta())
    adapt = list(theta) if adapt is None else adapt
    rates = lr if isinstance(lr, dict) else dict.fromkeys(adapt, lr)
    leaves = list(theta.values()) + [r for r in rates.values() if isinstance(r, Tensor)]
    total = [torch.zeros_like(v) for v in leaves]
    for i in range(T):
        phi = dict(theta)
        for _ in range(steps):
            loss = F.cross_entropy(naive_net(phi, sx[i]), sy[i])
            grads = torch.autograd.grad(loss, [phi[n] for n in adapt], create_graph=order == 2)
            phi = {**phi, **{n: phi[n] - rates[n] * g for n, g in zip(adapt, grads, strict=True)}}
        x = torch.cat([sx[i], qx[i]]) if stats else qx[i]
        out = naive_net(phi, x, stats=sx.shape[1] if stats else None)
        out = out[sx.shape[1] :] if stats else out
        grads = torch.autograd.grad(F.cross_entropy(out, qy[i]), leaves, allow_unused=True)
        total = [a + (b if b is not None else 0) for a, b in zip(total, grads, strict=True)]
    names = list(theta) + [f"inner_lrs.{j}" for j in range(len(leaves) - len(theta))]
    return dict(zip(names, total, strict=True))


# -- MAML and first-order MAML ------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["grouped", "per_task", "loop"])
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_maml_second_order_meta_gradient_matches_the_naive_loop(backend, steps):
    # Batch norm in batch-statistics mode is on: the case vmap over tasks gets wrong.
    learner = make(MAML, inner_lr=0.3, steps=steps, backend=backend)
    data = batch()
    want = reference(learner, *data, steps=steps, lr=0.3, order=2)
    assert_close_rel(meta_gradient(learner, *data), want)


@pytest.mark.parametrize("backend", ["grouped", "per_task"])
def test_fomaml_is_the_query_gradient_at_the_adapted_weights(backend):
    learner = make(MAML, inner_lr=0.3, steps=2, first_order=True, backend=backend)
    data = batch(1)
    want = reference(learner, *data, steps=2, lr=0.3, order=1)
    assert_close_rel(meta_gradient(learner, *data), want)
    second = reference(learner, *data, steps=2, lr=0.3, order=2)
    gap = max((want[n] - second[n]).abs().max().item() for n in want)
    assert gap > 1e-4  # the definitions differ, so the test can tell them apart


@pytest.mark.parametrize("backend", ["grouped", "per_task"])
def test_support_statistics_meta_gradient_matches_the_naive_loop(backend):
    learner = make(MAML, inner_lr=0.3, steps=1, batch_norm="support", backend=backend)
    data = batch(2)
    want = reference(learner, *data, steps=1, lr=0.3, order=2, stats=True)
    assert_close_rel(meta_gradient(learner, *data), want)


def test_recomputed_inner_loop_gives_the_same_meta_gradient():
    data = batch(3)
    plain = meta_gradient(make(MAML, steps=2), *data)
    remat = meta_gradient(make(MAML, steps=2, remat=True), *data)
    assert_close_rel(remat, plain, tol=1e-12)


# -- Meta-SGD, ANIL, Reptile --------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["grouped", "per_task"])
def test_metasgd_meta_gradient_of_weights_and_rates_matches_the_naive_loop(backend):
    learner = make(MetaSGD, steps=2, backend=backend)
    data = batch(4)
    want = reference(learner, *data, steps=2, lr=learner.rates(), order=2)
    got = meta_gradient(learner, *data)
    assert_close_rel(got, want)
    assert got["inner_lrs.0"].abs().max() > 0


def test_metasgd_rates_start_uniform_in_the_given_range_and_are_seeded():
    a = make(MetaSGD, lr_init_low=0.01, lr_init_high=0.02)
    rates = torch.cat([r.flatten() for r in a.inner_lrs])
    assert rates.min() >= 0.01 and rates.max() <= 0.02 and rates.std() > 0
    b = make(MetaSGD, lr_init_low=0.01, lr_init_high=0.02)
    assert all(torch.equal(x, y) for x, y in zip(a.inner_lrs, b.inner_lrs, strict=True))


@pytest.mark.parametrize("first_order", [False, True])
def test_anil_adapts_only_the_head(first_order):
    learner = make(ANIL, inner_lr=0.5, steps=3, first_order=first_order)
    data = batch(5)
    head = ["head.weight", "head.bias"]
    want = reference(learner, *data, steps=3, lr=0.5, order=1 if first_order else 2, adapt=head)
    assert_close_rel(meta_gradient(learner, *data), want)


def test_reptile_update_is_theta_plus_epsilon_times_mean_adapted_minus_theta():
    learner = make(Reptile, inner_lr=0.2, steps=3)
    sx, sy, qx, _ = batch(6)
    theta = {n: p.detach().clone() for n, p in learner.named_theta().items()}
    phis = []
    for i in range(T):  # plain SGD on each support set
        phi = {n: p.clone().requires_grad_() for n, p in theta.items()}
        for _ in range(3):
            grads = torch.autograd.grad(
                F.cross_entropy(naive_net(phi, sx[i]), sy[i]), list(phi.values())
            )
            phi = {
                n: (p - 0.2 * g).detach().requires_grad_()
                for (n, p), g in zip(phi.items(), grads, strict=True)
            }
        phis.append(phi)
    eps = 0.7
    opt = torch.optim.SGD(learner.parameters(), lr=eps)
    opt.zero_grad()
    learner(sx, sy, qx, ways=N)
    learner.outer_backward(torch.tensor(0.0))
    opt.step()
    for n, p in learner.named_theta().items():
        mean_phi = sum(phi[n] for phi in phis) / T
        torch.testing.assert_close(p.detach(), theta[n] + eps * (mean_phi - theta[n]))


def test_reptile_outer_backward_needs_a_training_forward():
    learner = make(Reptile)
    sx, sy, qx, _ = batch()
    with pytest.raises(RuntimeError, match="forward pass in training"):
        learner.outer_backward(torch.tensor(0.0))
    learner.eval()
    learner(sx, sy, qx, ways=N)
    with pytest.raises(RuntimeError, match="forward pass in training"):
        learner.outer_backward(torch.tensor(0.0))


# -- batch norm, steps at test time, regression, other encoders ---------------------------------


def test_transductive_batch_norm_is_the_default_and_eval_mode_keeps_it():
    learner = make(MAML, steps=1)
    assert learner.batch_norm == "transductive"
    sx, sy, qx, _ = batch(7)
    buffers = {n: b.clone() for n, b in learner.named_buffers()}
    train_out = learner(sx, sy, qx, ways=N)
    learner.eval()
    with torch.no_grad():
        eval_out = learner(sx, sy, qx, ways=N)
        other = qx.clone()
        other[:, 1:] = torch.randn_like(other[:, 1:])
        changed = learner(sx, sy, other, ways=N)
    # Eval mode uses the same batch statistics (no running statistics), so the same output,
    # and the first query's prediction depends on the other queries of its task.
    torch.testing.assert_close(eval_out, train_out.detach())
    assert not torch.allclose(changed[:, 0], eval_out[:, 0])
    assert all(torch.equal(b, buffers[n]) for n, b in learner.named_buffers())


def test_support_statistics_predict_each_query_on_its_own():
    learner = make(MAML, steps=1, batch_norm="support").eval()
    sx, sy, qx, _ = batch(8)
    with torch.no_grad():
        out = learner(sx, sy, qx, ways=N)
        other = qx.clone()
        other[:, 1:] = torch.randn_like(other[:, 1:])
        changed = learner(sx, sy, other, ways=N)
    torch.testing.assert_close(changed[:, 0], out[:, 0])


def test_eval_mode_uses_test_steps():
    sx, sy, qx, _ = batch(9)
    learner = make(MAML, steps=1, test_steps=3).eval()
    three = make(MAML, steps=3)
    with torch.no_grad():
        torch.testing.assert_close(learner(sx, sy, qx, ways=N), three(sx, sy, qx, ways=N))
        zero = make(MAML, steps=1, test_steps=0).eval()(sx, sy, qx, ways=N)
    theta = {n: p[None].expand(T, *p.shape) for n, p in learner.named_theta().items()}
    torch.testing.assert_close(zero, learner.net(theta, qx))


def test_regression_meta_gradient_matches_the_naive_loop():
    torch.manual_seed(0)  # test data only; the learner is seeded by init_parameters
    learner = init_parameters(MAML(MLP(1, hidden=(8, 8)), in_shape=(1,), out_features=1,
                                   inner_lr=0.01, steps=2), 0).double()  # fmt: skip
    x, y = torch.rand(T, 5, 1, dtype=torch.float64), torch.rand(T, 5, 1, dtype=torch.float64)
    qx, qy = torch.rand(T, 7, 1, dtype=torch.float64), torch.rand(T, 7, 1, dtype=torch.float64)
    theta = dict(learner.named_theta())

    def f(p, inp):
        h = torch.relu(inp @ p["encoder.layers.0.1.weight"].T + p["encoder.layers.0.1.bias"])
        h = torch.relu(h @ p["encoder.layers.1.0.weight"].T + p["encoder.layers.1.0.bias"])
        return h @ p["head.weight"].T + p["head.bias"]

    want = [torch.zeros_like(v) for v in theta.values()]
    for i in range(T):
        phi = dict(theta)
        for _ in range(2):
            g = torch.autograd.grad(((f(phi, x[i]) - y[i]) ** 2).mean(), list(phi.values()),
                                    create_graph=True)  # fmt: skip
            phi = {n: p - 0.01 * gi for (n, p), gi in zip(phi.items(), g, strict=True)}
        g = torch.autograd.grad(((f(phi, qx[i]) - qy[i]) ** 2).mean(), list(theta.values()))
        want = [a + b for a, b in zip(want, g, strict=True)]
    pred = learner(x, y, qx)
    ((pred - qy) ** 2).mean((1, 2)).sum().backward()
    assert_close_rel({n: p.grad for n, p in theta.items()}, dict(zip(theta, want, strict=True)))


def test_any_encoder_runs_through_the_per_task_loop():
    # LayerNorm has no grouped form: "auto" falls back to functional_call per task, and the
    # meta-gradient still matches a naive loop over a module copy-free functional_call.
    enc = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 6), nn.LayerNorm(6), nn.ReLU())
    learner = init_parameters(MAML(enc, in_shape=(1, SIDE, SIDE), ways=N, steps=1), 0).double()
    assert learner.backend_used == "loop"
    sx, sy, qx, qy = batch(10)
    theta = dict(learner.named_theta())

    def f(p, x):
        enc_p = {n[len("encoder.") :]: v for n, v in p.items() if n.startswith("encoder.")}
        h = torch.func.functional_call(enc, enc_p, (x,))
        return h @ p["head.weight"].T + p["head.bias"]

    want = [torch.zeros_like(v) for v in theta.values()]
    for i in range(T):
        g = torch.autograd.grad(F.cross_entropy(f(theta, sx[i]), sy[i]), list(theta.values()),
                                create_graph=True)  # fmt: skip
        phi = {n: p - 0.4 * gi for (n, p), gi in zip(theta.items(), g, strict=True)}
        g = torch.autograd.grad(F.cross_entropy(f(phi, qx[i]), qy[i]), list(theta.values()))
        want = [a + b for a, b in zip(want, g, strict=True)]
    assert_close_rel(meta_gradient(learner, sx, sy, qx, qy), dict(zip(theta, want, strict=True)))


def test_grouped_network_equals_one_call_per_task_on_conv4():
    net = init_parameters(nn.Sequential(Conv4(hidden=4)), 0).double()
    x = torch.randn(3, 5, 1, 28, 28, dtype=torch.float64)
    params = {n: p[None] + 0.01 * torch.randn(3, *p.shape, dtype=p.dtype)
              for n, p in net.named_parameters()}  # fmt: skip
    grouped = GroupedNet(net)(params, x)
    loop = LoopNet(net)(params, x)
    torch.testing.assert_close(grouped, loop, rtol=1e-10, atol=1e-10)


def test_bf16_autocast_meta_gradient_is_close_to_fp32():
    learner = init_parameters(MAML(encoder(), in_shape=(1, SIDE, SIDE), ways=N), 0)
    sx, sy, qx, qy = batch(11, dtype=torch.float32)
    fp32 = meta_gradient(learner, sx, sy, qx, qy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        learner.zero_grad(set_to_none=True)
        logits = learner(sx, sy, qx, ways=N)
    assert logits.dtype == torch.float32 or logits.dtype == torch.bfloat16
    F.cross_entropy(logits.float().flatten(0, 1), qy.flatten(), reduction="sum").div(
        N * Q
    ).backward()
    a = torch.cat([fp32[n].flatten() for n in fp32])
    b = torch.cat([p.grad.flatten() for p in learner.parameters()])
    assert (a - b).norm() / a.norm() < 0.1


# -- errors --------------------------------------------------------------------------------------


def test_bad_arguments_and_calls_name_the_problem():
    with pytest.raises(ValueError, match="exactly one of ways"):
        MAML(encoder(), in_shape=(1, SIDE, SIDE))
    with pytest.raises(ValueError, match="inner_lr must be > 0"):
        MAML(encoder(), in_shape=(1, SIDE, SIDE), ways=3, inner_lr=0.0)
    with pytest.raises(ValueError, match="batch_norm must be"):
        MAML(encoder(), in_shape=(1, SIDE, SIDE), ways=3, batch_norm="running")
    with pytest.raises(ValueError, match="lr_init_low <= lr_init_high"):
        MetaSGD(encoder(), in_shape=(1, SIDE, SIDE), ways=3, lr_init_low=0.2, lr_init_high=0.1)
    odd = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 4), nn.LayerNorm(4))
    with pytest.raises(ValueError, match="LayerNorm has no per-task grouped form"):
        MAML(odd, in_shape=(1, SIDE, SIDE), ways=3, backend="grouped")
    with pytest.raises(ValueError, match="batch_norm='support' needs"):
        MAML(encoder(), in_shape=(1, SIDE, SIDE), ways=3, backend="loop", batch_norm="support")
    learner = make(MAML)
    sx, sy, qx, _ = batch()
    with pytest.raises(ValueError, match="called with ways=5; test it at 3 ways"):
        learner(sx, sy, qx, ways=5)
    with pytest.raises(ValueError, match="built for 3-way classification"):
        learner(sx, torch.rand(T, N * K, 1, dtype=torch.float64), qx)


def test_per_task_rows_are_views_whose_gradients_sum_back():
    w = torch.randn(2, 3, requires_grad=True)
    rows = per_task({"w": w}, 4)["w"]
    assert rows.shape == (4, 2, 3) and rows.data_ptr() == w.data_ptr()
    (rows * torch.arange(4.0)[:, None, None]).sum().backward()
    torch.testing.assert_close(w.grad, torch.full((2, 3), 6.0))


def test_repr_shows_the_hyper_parameters():
    text = repr(make(MAML, steps=2, test_steps=5, first_order=True))
    shown = ["ways=3", "inner_lr=0.4", "steps=2", "test_steps=5", "first_order=True"]
    shown += ["batch_norm='transductive'", "backend='auto' (grouped)", "remat=False"]
    assert all(part in text for part in shown), text
    assert math.isfinite(make(Reptile).inner_lr)


def test_an_impossible_combination_of_arguments_is_a_config_error():
    # Found by running `manytask run omniglot/maml-5w1s model.args.backend=loop
    # model.args.batch_norm=support`: the constructor's ValueError came out as a traceback.
    from manytask.train.build import build_learner
    from manytask.typed import ConfigError

    message = r"model.args: learner 'maml': batch_norm='support' needs"
    with pytest.raises(ConfigError, match=message):
        build_learner("maml", {"backend": "loop", "batch_norm": "support"}, "conv4",
                      {"hidden": 4}, in_shape=(1, 28, 28), ways=5)  # fmt: skip


def test_a_diverged_test_score_still_gets_a_report():
    # Found by use: Meta-SGD's rates, learned for one step, diverge over 10 test steps on
    # sinusoids; the NaN test MSE crashed the report's plot after training had finished.
    from manytask.train.report import _plot_test

    nan = float("nan")
    png = _plot_test([nan, nan], {"mean": nan, "ci95": nan, "metric": "mse", "label": "MSE"}, "x")
    assert png[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "recipe, precision, warns",
    [
        ("omniglot/maml-20w1s", "bf16", True),  # 5 inner steps
        ("omniglot/maml-20w1s", "fp32", False),
        ("omniglot/maml-5w1s", "bf16", False),  # 1 inner step: measured 9%, no warning
        ("omniglot/reptile-5w1s", "bf16", False),  # nothing differentiated through the steps
    ],
)
def test_bf16_through_several_inner_steps_warns(recipe, precision, warns, caplog):
    from manytask.config import load_config
    from manytask.recipes import recipe_path
    from manytask.train.context import RunContext
    from manytask.train.meta import setup

    cfg = load_config(
        recipe_path(recipe),
        [f"train.precision={precision}", "data.source=embedded", "eval.episodes=2",
         "train.val_every=0", "model.encoder_args.hidden=4", "device=cpu"],
    )  # fmt: skip
    with caplog.at_level("WARNING", logger="manytask"):
        setup(cfg, RunContext(device=torch.device("cpu"), progress=False))
    assert ("110% off with 5" in caplog.text) is warns


def test_grouped_batch_norm_gradients_are_as_precise_as_nchw_in_fp32():
    # Bug: on CPU, F.batch_norm on a channels-last tensor sums its statistics and gradients
    # row after row (1.4e-5 relative error in the weight gradient at 25 x 28 x 28 rows, against
    # 3e-7 in NCHW); five MAML inner steps amplified it to a meta-gradient 8% off float64.
    from manytask.meta.functional import _batch_norm, _Norm

    g = torch.Generator().manual_seed(0)
    x64 = torch.randn(25, 64, 28, 28, dtype=torch.float64, generator=g) * 2 + 0.5
    gy64 = torch.randn(25, 64, 28, 28, dtype=torch.float64, generator=g) * 1e-3 + 2e-4
    w64 = torch.rand(1, 64, dtype=torch.float64, generator=g) + 0.5
    op = _Norm("w", "b", 1e-5)

    def grads(dtype: torch.dtype) -> list[Tensor]:
        x = x64.to(dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
        w = w64.to(dtype).clone().requires_grad_()
        b = torch.zeros(1, 64, dtype=dtype, requires_grad=True)
        out = _batch_norm(x, op, {"w": w, "b": b}, 1, True, None, False)
        out.backward(gy64.to(dtype).contiguous(memory_format=torch.channels_last))
        return [x.grad.double(), w.grad.double(), b.grad.double()]

    for got, want in zip(grads(torch.float32), grads(torch.float64), strict=True):
        assert float((got - want).norm() / want.norm()) < 3e-6
