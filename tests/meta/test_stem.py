"""The first-order stem block: conv, batch norm, max-pool and ReLU of the first layer in one
operation, against the layers written out (float64, and fp32 rounding)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from manytask.meta import PerTaskNet, per_task
from manytask.meta._stem import StemSpec, stem_block, stem_tasks
from manytask.meta.functional import STEM_MAX_PATCH, GroupedNet, task_loss


def _spec(**kw) -> StemSpec:
    base = dict(kernel=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), eps=1e-5,
                pool_kernel=(2, 2), pool_stride=(2, 2), pool_padding=(0, 0), ceil_mode=False,
                relu=True)  # fmt: skip
    base.update(kw)
    return StemSpec(**base)


def _layers(x, w, b, g, be, spec: StemSpec, stats_rows=None):
    """The block as its layers: conv2d, batch norm (batch statistics), max_pool2d, ReLU."""
    h = F.conv2d(x, w, b, spec.stride, spec.padding, spec.dilation)
    if stats_rows is None:
        h = F.batch_norm(h, None, None, g, be, training=True, eps=spec.eps)
    else:
        ref = h[:stats_rows]
        mean = ref.mean((0, 2, 3), keepdim=True)
        var = ref.var((0, 2, 3), unbiased=False, keepdim=True)
        h = (h - mean) * torch.rsqrt(var + spec.eps)
        if g is not None:
            h = h * g.view(1, -1, 1, 1)
        if be is not None:
            h = h + be.view(1, -1, 1, 1)
    h = F.max_pool2d(h, spec.pool_kernel, spec.pool_stride, spec.pool_padding,
                     ceil_mode=spec.ceil_mode)  # fmt: skip
    return F.relu(h) if spec.relu else h


def _case(cin=1, c=6, n=4, size=11, kernel=(3, 3), affine=True, bias=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, cin, size, size, generator=gen, dtype=torch.float64)
    w = torch.randn(c, cin, *kernel, generator=gen, dtype=torch.float64) * 0.5
    b = torch.randn(c, generator=gen, dtype=torch.float64) if bias else None
    g = be = None
    if affine:
        g = torch.rand(c, generator=gen, dtype=torch.float64) + 0.5
        g[::2] *= -1  # negative scales: those channels pool minima
        be = torch.randn(c, generator=gen, dtype=torch.float64) * 0.2
    return x, w, b, g, be


CASES = {
    "conv4": ({}, {}),
    "no-affine": ({"affine": False}, {}),
    "no-bias": ({"bias": False}, {}),
    "no-relu": ({}, {"relu": False}),
    "rgb-stride2-nopad": ({"cin": 3, "size": 13}, {"stride": (2, 2), "padding": (0, 0)}),
    "dilated": ({"size": 12}, {"dilation": (2, 2), "padding": (2, 2)}),
    "overlapping-pool": ({}, {"pool_kernel": (3, 3), "pool_stride": (2, 2)}),
    "padded-ceil-pool": ({"size": 10}, {"pool_padding": (1, 1), "ceil_mode": True}),
    "rect-kernel": ({"kernel": (1, 5)}, {"kernel": (1, 5), "padding": (0, 2)}),
}


@pytest.mark.parametrize("stats_rows", [None, 2])
@pytest.mark.parametrize("name", list(CASES))
def test_values_and_gradients_equal_the_layers_float64(name, stats_rows):
    case_kw, spec_kw = CASES[name]
    x, w, b, g, be = _case(**case_kw)
    spec = _spec(**spec_kw)
    params = [t for t in (w, b, g, be) if t is not None]
    for t in params:
        t.requires_grad_()
    ref = _layers(x, w, b, g, be, spec, stats_rows)
    out = stem_block(x, w, b, g, be, spec, stats_rows)
    assert out.shape == ref.shape and out.is_contiguous()
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    cot = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=ref.dtype)
    want = torch.autograd.grad(ref, params, cot)
    got = torch.autograd.grad(out, params, cot)
    for a, r in zip(got, want, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-11)


def test_fp32_rounding_no_worse_than_the_layers():
    """At Conv4's first layer with Omniglot-like input (binary strokes plus noise), fp32."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(20, 1, 28, 28, generator=gen) > 0.8).double()
    x = x + 0.01 * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    x, w, b, g, be = (x, *_case(c=64, seed=3)[1:])
    spec = _spec()
    cot = torch.randn(20, 64, 14, 14, generator=gen, dtype=torch.float64)

    def run(fn, dtype):
        ps = [t.to(dtype).requires_grad_() for t in (w, b, g, be)]
        out = fn(x.to(dtype), *ps, spec)
        return [out, *torch.autograd.grad(out, ps, cot.to(dtype))]

    exact = run(_layers, torch.float64)
    layers, stem = run(_layers, torch.float32), run(stem_block, torch.float32)
    for i in (0, 1, 3, 4):  # the output, the weight's, gamma's and beta's gradients
        e_layers = ((layers[i].double() - exact[i]).norm() / exact[i].norm()).item()
        e_stem = ((stem[i].double() - exact[i]).norm() / exact[i].norm()).item()
        assert e_stem < max(2 * e_layers, 1e-6), (i, e_stem, e_layers)
    # The bias's gradient is zero (batch norm removes it): exactly so here, not rounding noise.
    assert torch.count_nonzero(stem[2]) == 0


def test_it_is_first_order_only_and_refuses_a_differentiated_input():
    x, w, b, g, be = _case()
    w.requires_grad_()
    out = stem_block(x, w, b, g, be, _spec())
    with pytest.raises(RuntimeError, match="first order"):
        torch.autograd.grad(out.square().sum(), w, create_graph=True)
    (gw,) = torch.autograd.grad(out.square().sum(), w)  # without a graph: fine
    assert torch.isfinite(gw).all()
    with pytest.raises(ValueError, match="not differentiated"):
        stem_block(x.requires_grad_(), w, b, g, be, _spec())


def _conv4ish(cin: int = 1) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(cin, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4 * 2 * 2, 3),
    ).double()  # fmt: skip


def test_per_task_network_takes_the_first_order_block_in_first_order_passes_only(graph_names):
    net = _conv4ish()
    params = per_task({k: v.requires_grad_() for k, v in net.named_parameters()}, tasks=2)
    x = torch.rand(2, 5, 1, 8, 8, dtype=torch.float64)
    once, twice = PerTaskNet(net)(params, x), PerTaskNet(net)(params, x, twice=True)
    assert "_StemBackward" in graph_names(once)
    assert "_StemBackward" not in graph_names(twice)
    assert "BmmBackward0" in graph_names(twice)  # stem_tasks: any order
    torch.testing.assert_close(once, twice, rtol=1e-12, atol=1e-12)
    # Patches too large (4 channels x 3 x 3 > STEM_MAX_PATCH): the ordinary layers.
    wide = _conv4ish(cin=4)
    assert STEM_MAX_PATCH < 4 * 9
    p4 = per_task(dict(wide.named_parameters()), tasks=2)
    out = PerTaskNet(wide)(p4, torch.rand(2, 5, 4, 8, 8, dtype=torch.float64))
    assert "_StemBackward" not in graph_names(out)
    assert "BmmBackward0" not in graph_names(out)


def test_second_order_maml_gradient_through_it_equals_the_layers():
    """Second-order MAML with the stem in the query pass: the meta-gradient is the one of
    the ordinary layers (float64), the support passes keep their double backward."""
    net = _conv4ish()
    theta = dict(net.named_parameters())
    gen = torch.Generator().manual_seed(2)
    sx, qx = torch.rand(2, 3, 1, 8, 8, generator=gen, dtype=torch.float64), None
    qx = torch.rand(2, 6, 1, 8, 8, generator=gen, dtype=torch.float64)
    sy, qy = torch.tensor([[0, 1, 2]] * 2), torch.tensor([[0, 1, 2, 0, 1, 2]] * 2)

    def meta_grad(query_twice: bool):
        f = PerTaskNet(net)
        fast = per_task(theta, 2)
        loss = task_loss(f(fast, sx, twice=True), sy)
        grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
        fast = {k: v - 0.3 * g for (k, v), g in zip(fast.items(), grads, strict=True)}
        return torch.autograd.grad(task_loss(f(fast, qx, twice=query_twice), qy),
                                   list(theta.values()))  # fmt: skip

    for a, r in zip(meta_grad(False), meta_grad(True), strict=True):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


def test_under_autocast_the_any_order_block_runs_in_bf16(graph_names):
    net = _conv4ish().float()
    params = per_task(dict(net.named_parameters()), tasks=2)
    x = torch.rand(2, 5, 1, 8, 8)
    want = PerTaskNet(net)(params, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for f in (PerTaskNet(net), GroupedNet(net)):
            out = f(params, x)
            assert "_StemBackward" not in graph_names(out)
            assert "BmmBackward0" in graph_names(out)
            torch.testing.assert_close(out.float(), want, rtol=0.1, atol=0.1)


def _tasks_case(name: str, tasks: int = 3):
    case_kw, spec_kw = CASES[name]
    cases = [_case(seed=i, **case_kw) for i in range(tasks)]
    x = torch.stack([c[0] for c in cases])
    params = [torch.stack([c[j] for c in cases]) if cases[0][j] is not None else None
              for j in range(1, 5)]  # fmt: skip
    return x, params, _spec(**spec_kw)


@pytest.mark.parametrize("stats_rows", [None, 2])
@pytest.mark.parametrize("name", list(CASES))
def test_tasks_block_equals_the_layers_to_second_order_float64(name, stats_rows):
    x, params, spec = _tasks_case(name)
    live = [p.requires_grad_() for p in params if p is not None]
    out = stem_tasks(x, *params, spec, stats_rows)
    per = [_layers(x[i], *[p[i] if p is not None else None for p in params], spec, stats_rows)
           for i in range(x.shape[0])]  # fmt: skip
    ref = torch.cat(per, 1)  # the grouped layout: [N, T*C, Hp, Wp], task-major channels
    assert out.shape == ref.shape and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    gen = torch.Generator().manual_seed(4)
    cot = torch.randn(ref.shape, generator=gen, dtype=ref.dtype)
    got = torch.autograd.grad(out, live, cot, create_graph=True)
    want = torch.autograd.grad(ref, live, cot, create_graph=True)
    for a, r in zip(got, want, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-11)
    v = [torch.randn(g.shape, generator=gen, dtype=g.dtype) for g in got]
    second = torch.autograd.grad(sum((a * b).sum() for a, b in zip(got, v, strict=True)), live,
                                 allow_unused=True, materialize_grads=True)  # fmt: skip
    expect = torch.autograd.grad(sum((a * b).sum() for a, b in zip(want, v, strict=True)),
                                 live, allow_unused=True, materialize_grads=True)  # fmt: skip
    for a, r in zip(second, expect, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-10)


def test_tasks_block_passes_gradgradcheck_and_keeps_a_zero_bias_gradient():
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 1, 6, 6, generator=gen, dtype=torch.float64)
    w = torch.randn(2, 3, 1, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    g = (torch.rand(2, 3, generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
    be = torch.randn(2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    spec = _spec()

    def f(w, b, g, be):
        return stem_tasks(x, w, b, g, be, spec)

    assert torch.autograd.gradgradcheck(f, (w, b, g, be))
    (gb,) = torch.autograd.grad(f(w, b, g, be).sum(), b)  # a tensor (the inner loop needs one)
    assert gb is not None and torch.count_nonzero(gb) == 0


def test_grouped_call_without_image_dimensions_still_says_so():
    """A GroupedNet over a conv encoder given [T, B, F] features: the old message, not an
    error from inside the stem."""
    from manytask.meta.functional import UnsupportedLayer

    net = _conv4ish().float()
    params = per_task(dict(net.named_parameters()), tasks=2)
    with pytest.raises(UnsupportedLayer, match="Conv2d after the features were flattened"):
        GroupedNet(net)(params, torch.rand(2, 5, 64))
