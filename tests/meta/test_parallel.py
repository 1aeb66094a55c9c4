"""Tasks over worker threads (``task_workers``) and the per-task network (``backend="per_task"``).

The worker threads must not change what is computed: the meta-gradient with ``task_workers``
is compared with the single-thread one in float64 (the only difference is the order in which
the per-task gradients are summed), for every learner that offers it and for each backend,
including the ``functional_call`` loop, whose module is not safe to share between threads.
"""

from __future__ import annotations

import itertools
import threading

import pytest
import torch
import torch.nn.functional as F
from test_optimisation import SIDE, N, assert_close_rel, batch, encoder, make, meta_gradient
from torch import nn

from manytask.meta import ANIL, MAML, MetaSGD, PerTaskNet, per_task
from manytask.meta.functional import GroupedNet, _NHWCMaxPool, _Pool
from manytask.meta.parallel import chunk_bounds, in_worker, over_tasks
from manytask.nn import Conv4, init_parameters


@pytest.mark.parametrize(
    ("cls", "kw"),
    [
        (MAML, {"steps": 2}),
        (MAML, {"steps": 1, "first_order": True}),
        (MAML, {"steps": 1, "backend": "per_task"}),
        (MAML, {"steps": 1, "backend": "loop"}),
        (MAML, {"steps": 1, "backend": "per_task", "batch_norm": "support"}),
        (MAML, {"steps": 2, "remat": True, "backend": "per_task"}),
        (MetaSGD, {"steps": 1, "backend": "per_task"}),
        (ANIL, {"steps": 2}),
    ],
)
@pytest.mark.parametrize("workers", [2, 3])
def test_task_workers_give_the_single_thread_meta_gradient(cls, kw, workers):
    data = batch(7)
    want = meta_gradient(make(cls, **kw), *data)
    learner = make(cls, task_workers=workers, **kw)
    assert_close_rel(meta_gradient(learner, *data), want, tol=1e-12)
    # eval mode (no graph) through the workers: the same predictions
    serial = make(cls, **kw).eval()
    learner.eval()
    with torch.no_grad():
        torch.testing.assert_close(learner(*data[:3], ways=N), serial(*data[:3], ways=N))


def test_workers_leave_the_modules_and_the_thread_settings_as_they_were():
    learner = make(MAML, backend="loop", task_workers=2)
    before = {n: p.clone() for n, p in learner.state_dict().items()}
    threads = torch.get_num_threads()
    meta_gradient(learner, *batch(8))
    after = learner.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before)  # no swapped-in tensors left
    assert learner.encoder[1].training  # batch statistics switched back on the module itself
    seen = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert torch.get_num_threads() == threads and seen == [threads]
    assert not in_worker()


def test_autocast_reaches_the_workers():
    # per_task: each task is the same calls whatever its chunk, so bf16 results are equal too
    learner = MAML(encoder(), in_shape=(1, SIDE, SIDE), ways=N, backend="per_task", task_workers=2)
    init_parameters(learner, 0)
    sx, sy, qx, _ = batch(9, dtype=torch.float32)
    assert learner(sx, sy, qx, ways=N).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = learner(sx, sy, qx, ways=N)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        learner.task_workers = 1
        want = learner(sx, sy, qx, ways=N)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_a_failing_worker_raises_in_the_caller():
    def compute(p, sx, sy, qx):
        if sx.shape[0] == 1:
            raise RuntimeError("bad chunk")
        return qx * p["w"]

    w = torch.ones(2, requires_grad=True)
    x = torch.rand(3, 4, 2)
    with pytest.raises(RuntimeError, match="bad chunk"):
        over_tasks(compute, {"w": w}, x, x, x, workers=2)  # chunks of 2 and 1 tasks


def test_chunks_cover_the_tasks_in_order():
    for tasks in range(1, 12):
        for workers in range(1, 6):
            bounds = chunk_bounds(tasks, workers)
            assert bounds[0][0] == 0 and bounds[-1][1] == tasks
            assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
            sizes = [b - a for a, b in bounds]
            assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_bad_task_workers_are_refused():
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="task_workers must be an int >= 1"):
            MAML(encoder(), in_shape=(1, SIDE, SIDE), ways=N, task_workers=bad)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        over_tasks(lambda p, a, b, c: c, {}, torch.zeros(2, 1), torch.zeros(2, 1),
                   torch.zeros(2, 1), workers=0)  # fmt: skip


def test_the_config_takes_task_workers_and_the_per_task_backend():
    from manytask.train.build import build_learner
    from manytask.typed import ConfigError

    learner = build_learner("maml", {"backend": "per_task", "task_workers": 2}, "conv4",
                            {"hidden": 4}, in_shape=(1, 28, 28), ways=5)  # fmt: skip
    assert learner.task_workers == 2 and learner.backend_used == "per_task"
    assert "task_workers=2" in repr(learner)
    with pytest.raises(ConfigError, match="task_workers"):
        build_learner("maml", {"task_workers": 0}, "conv4", {"hidden": 4},
                      in_shape=(1, 28, 28), ways=5)  # fmt: skip


# -- the per-task network -----------------------------------------------------------------------


def test_per_task_network_equals_one_call_per_task_on_conv4():
    net = init_parameters(nn.Sequential(Conv4(hidden=4)), 0).double()
    x = torch.randn(3, 5, 1, 28, 28, dtype=torch.float64)
    params = {n: p[None] + 0.01 * torch.randn(3, *p.shape, dtype=p.dtype)
              for n, p in net.named_parameters()}  # fmt: skip
    want = torch.stack([torch.func.functional_call(net, {n: p[i] for n, p in params.items()},
                                                   (x[i],)) for i in range(3)])  # fmt: skip
    torch.testing.assert_close(PerTaskNet(net)(params, x), want, rtol=1e-12, atol=1e-12)


def test_relu_moves_after_its_max_pool_and_nothing_else_moves():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Tanh(),
                        nn.AvgPool2d(2), nn.ReLU(), nn.Flatten())  # fmt: skip
    kinds = [type(op).__name__ for op in PerTaskNet(net)._net.ops]
    assert kinds == ["_Conv", "_Pool", "_Act", "_Act", "_Pool", "_Act", "_Flatten"]
    assert [type(op).__name__ for op in GroupedNet(net).ops][1:3] == ["_Act", "_Pool"]


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "ceil"),
    [(2, None, 0, False), (3, 2, 1, True), (2, 1, 0, False)],
)
def test_channels_last_max_pool_equals_max_pool_and_its_second_derivative(
    kernel, stride, padding, ceil
):
    op = _Pool("max", kernel, stride, padding, ceil)
    x = torch.randn(3, 4, 9, 9, dtype=torch.float64, requires_grad=True)
    g = torch.randn_like(F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil)).requires_grad_()
    out = _NHWCMaxPool.apply(x, op)
    ref = F.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil)
    assert out.is_contiguous()
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    (a,) = torch.autograd.grad(out, x, g, create_graph=True)
    (b,) = torch.autograd.grad(ref, x, g, create_graph=True)
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # no ties in random data
    v = torch.randn_like(x)
    torch.testing.assert_close(torch.autograd.grad((a * v).sum(), g)[0],
                               torch.autograd.grad((b * v).sum(), g)[0])  # fmt: skip


def test_max_pool_ties_send_each_window_s_gradient_to_one_maximum():
    # Binary images give equal maxima in a window; any one of them is a valid subgradient.
    x = (torch.rand(2, 3, 8, 8) < 0.5).double().requires_grad_()
    g = torch.rand(2, 3, 4, 4, dtype=torch.float64) + 1
    out = _NHWCMaxPool.apply(x, _Pool("max", 2, None, 0, False))
    (grad,) = torch.autograd.grad(out, x, g)
    windows = grad.unfold(2, 2, 2).unfold(3, 2, 2).reshape(2, 3, 4, 4, 4)
    values = x.detach().unfold(2, 2, 2).unfold(3, 2, 2).reshape(2, 3, 4, 4, 4)
    torch.testing.assert_close(windows.sum(-1), g)
    assert ((windows != 0).sum(-1) == 1).all()
    hit = windows.argmax(-1, keepdim=True)
    torch.testing.assert_close(values.gather(-1, hit).squeeze(-1), values.amax(-1))


def test_per_task_backend_needs_supported_layers():
    odd = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 4), nn.LayerNorm(4))
    with pytest.raises(ValueError, match="backend='per_task' needs an encoder made of"):
        MAML(odd, in_shape=(1, SIDE, SIDE), ways=3, backend="per_task")
    rows = per_task({"w": torch.zeros(2)}, 3)
    assert rows["w"].shape == (3, 2)


def test_workers_that_cannot_help_are_named():
    learner = make(MAML, task_workers=4)
    assert "more than the 2 intra-op threads" in learner.resource_caution("cpu", 2)
    assert "only splits CPU work; on cuda" in learner.resource_caution("cuda", 2)
    assert learner.resource_caution("cpu", 4) is None
    assert make(MAML).resource_caution("cuda", 1) is None


def test_a_run_with_more_task_workers_than_threads_warns(caplog):
    # Found by hand: `model.args.task_workers=1e3` ran 32 one-thread workers on 2 cores
    # without a word.
    from manytask.config import load_config
    from manytask.recipes import recipe_path
    from manytask.train.context import RunContext
    from manytask.train.meta import setup

    threads = torch.get_num_threads()
    cfg = load_config(
        recipe_path("omniglot/maml-5w1s"),
        [f"model.args.task_workers={threads + 1}", "data.source=embedded", "eval.episodes=2",
         "train.val_every=0", "model.encoder_args.hidden=4", "device=cpu"],
    )  # fmt: skip
    with caplog.at_level("WARNING", logger="manytask"):
        setup(cfg, RunContext(device=torch.device("cpu"), progress=False))
    assert f"task_workers={threads + 1} is more than the {threads} intra-op" in caplog.text


@pytest.mark.parametrize("workers", [1, 2])
def test_inference_mode_is_refused_with_a_way_out(workers):
    # Found by hand: under torch.inference_mode() MAML failed with "element 0 of tensors does
    # not require grad" (one thread) but ran with task workers, whose threads are not in
    # inference mode: the same call now fails the same way whatever task_workers is.
    learner = make(MAML, task_workers=workers).eval()
    sx, sy, qx, _ = batch(12)
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"under torch.no_grad\(\)"):
        learner(sx, sy, qx, ways=N)
    with torch.no_grad():
        assert learner(sx, sy, qx, ways=N).shape == (sx.shape[0], qx.shape[1], N)
