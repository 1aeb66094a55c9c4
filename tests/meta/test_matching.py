"""Matching Networks: eq. 1-2 and the FCE appendix against naive per-task computations."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import manytask
from manytask.cli import main
from manytask.config import load_config
from manytask.meta import MatchingNet
from manytask.meta.matching import AttentionLSTM, SupportContext, cosine_similarities
from manytask.nn import Conv4, init_parameters
from manytask.recipes import list_recipes, recipe_path
from manytask.train.meta import build_run_learner


def _tasks(t=3, n=4, k=2, q=3, d=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(t, n * k, d, generator=g, dtype=dtype)
    sy = torch.stack([torch.randperm(n * k, generator=g) % n for _ in range(t)])
    qx = torch.randn(t, n * q, d, generator=g, dtype=dtype)
    return sx, sy, qx


def _net(d=6, **kwargs):
    return init_parameters(MatchingNet(nn.Identity(), in_shape=(d,), **kwargs), 0).double()


def _cos(a, b):
    return float(a @ b) / math.sqrt(float(a @ a) * float(b @ b))


def _naive_log_probs(fq, gs, labels, ways, scale=1.0):
    """Eq. 1-2 for one query: softmax of cosines, summed per class, then the log."""
    cos = scale * torch.tensor([_cos(fq, g) for g in gs], dtype=torch.float64)
    a = cos.exp() / cos.exp().sum()
    return torch.stack([a[labels == c].sum() for c in range(ways)]).log()


# -- LSTMs written out by hand (PyTorch's gate order: input, forget, cell, output) ------------


def _lstm_step(x, h, c, w_ih, w_hh, b_ih, b_hh):
    i, f, g, o = (w_ih @ x + b_ih + w_hh @ h + b_hh).chunk(4)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _naive_support_context(lstm: nn.LSTM, gs):
    """A.2: g(x_i, S) = forward h_i + backward h_i + g'(x_i), one task."""
    d = gs.shape[1]
    fwd = [
        p.detach() for p in (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
    ]
    bwd = [
        p.detach()
        for p in (
            lstm.weight_ih_l0_reverse,
            lstm.weight_hh_l0_reverse,
            lstm.bias_ih_l0_reverse,
            lstm.bias_hh_l0_reverse,
        )
    ]
    n = len(gs)
    hf, hb = [None] * n, [None] * n
    h = c = torch.zeros(d, dtype=gs.dtype)
    for i in range(n):
        h, c = _lstm_step(gs[i], h, c, *fwd)
        hf[i] = h
    h = c = torch.zeros(d, dtype=gs.dtype)
    for i in reversed(range(n)):
        h, c = _lstm_step(gs[i], h, c, *bwd)
        hb[i] = h
    return torch.stack([hf[i] + hb[i] + gs[i] for i in range(n)])


def _naive_attention_lstm(cell: nn.LSTMCell, fq, g, steps):
    """A.1 for one query: K reads r = sum_i softmax(h.g_i) g_i, LSTM on [f'; r], skip f'."""
    w = [p.detach() for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]
    h, c = fq.clone(), torch.zeros_like(fq)
    for _ in range(steps):
        scores = torch.stack([h @ gi for gi in g])
        r = (scores.exp() / scores.exp().sum()) @ g
        h_hat, c = _lstm_step(torch.cat([fq, r]), h, c, *w)
        h = h_hat + fq
    return h


# -- the paper's equations ---------------------------------------------------------------------


def test_logits_are_the_log_of_the_attention_weighted_labels():
    # Eq. 1-2 without FCE (f = g = the embedding; identity here), naively per task and query.
    sx, sy, qx = _tasks()
    logits = _net()(sx, sy, qx, ways=4)
    assert logits.shape == (3, 12, 4)
    for t in range(3):
        for j in range(12):
            expect = _naive_log_probs(qx[t, j], sx[t], sy[t], 4)
            torch.testing.assert_close(logits[t, j], expect, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(logits.exp().sum(-1), torch.ones(3, 12, dtype=torch.float64))


def test_scale_multiplies_the_cosines_and_sharp_attention_stays_finite():
    sx, sy, qx = _tasks(t=2)
    logits = _net(scale=7.5)(sx, sy, qx, ways=4)
    for t in range(2):
        for j in range(12):
            expect = _naive_log_probs(qx[t, j], sx[t], sy[t], 4, scale=7.5)
            torch.testing.assert_close(logits[t, j], expect, rtol=1e-10, atol=1e-10)
    # exp(-2000) underflows: summing weights then taking the log would give -inf.
    sharp = _net(scale=1000.0).float()(sx.float(), sy, qx.float(), ways=4)
    assert torch.isfinite(sharp).all()
    torch.testing.assert_close(sharp.exp().sum(-1), torch.ones(2, 12))
    nearest = cosine_similarities(qx, sx).argmax(-1)  # the class of the most similar example
    assert torch.equal(sharp.argmax(-1), torch.gather(sy, 1, nearest))


def test_attention_weights_sum_to_one_and_are_the_softmax_of_cosines():
    sx, _, qx = _tasks()
    a = _net().attention(sx, qx)
    assert a.shape == (3, 12, 8)
    torch.testing.assert_close(a.sum(-1), torch.ones(3, 12, dtype=torch.float64))
    for t in range(3):
        for j in range(12):
            cos = torch.tensor([_cos(qx[t, j], s) for s in sx[t]], dtype=torch.float64)
            torch.testing.assert_close(a[t, j], torch.softmax(cos, 0))


def test_cosine_similarities_match_torch_and_survive_zero_vectors():
    a, b = torch.randn(2, 5, 7), torch.randn(2, 3, 7)
    expect = torch.nn.functional.cosine_similarity(a[:, :, None], b[:, None], dim=-1)
    torch.testing.assert_close(cosine_similarities(a, b), expect)
    b[0, 1] = 0.0
    out = cosine_similarities(a, b)
    assert torch.isfinite(out).all() and bool((out[0, :, 1] == 0).all())


def test_fce_equals_the_appendix_written_out_per_task():
    # A.1 and A.2 with hand-written LSTMs, per task and per query; then eq. 1-2 on f and g.
    sx, sy, qx = _tasks(t=2, n=3, k=2, q=2, d=5)
    net = _net(d=5, fce=True, fce_steps=3)
    logits = net(sx, sy, qx, ways=3)
    assert net.support_context is not None and net.query_attention is not None
    for t in range(2):
        g = _naive_support_context(net.support_context.lstm, sx[t])
        for j in range(6):
            f = _naive_attention_lstm(net.query_attention.cell, qx[t, j], g, steps=3)
            expect = _naive_log_probs(f, g, sy[t], 3)
            torch.testing.assert_close(logits[t, j], expect, rtol=1e-9, atol=1e-9)


def test_fce_embeddings_depend_on_the_support_set_and_plain_ones_do_not():
    sx, _, qx = _tasks(t=1, n=3, k=1, q=2, d=5)
    other = sx.clone()
    other[0, 2] += 1.0  # change one support example
    for fce in (False, True):
        net = _net(d=5, fce=fce)
        g1, f1 = net.embed(sx, qx)
        g2, f2 = net.embed(other, qx)
        assert g1.shape == (1, 3, 5) and f1.shape == (1, 6, 5)
        if fce:  # every support embedding and every query embedding moves
            assert all(not torch.allclose(g1[0, i], g2[0, i]) for i in range(2))
            assert not torch.allclose(f1, f2)
        else:  # only the changed example's own embedding
            torch.testing.assert_close(g1[0, :2], g2[0, :2])
            torch.testing.assert_close(f1, f2)


@pytest.mark.parametrize(("t", "n", "k", "q"), [(1, 2, 1, 1), (2, 5, 1, 3), (3, 3, 4, 2)])
def test_fce_shapes_over_a_grid(t, n, k, q):
    sx, sy, qx = _tasks(t=t, n=n, k=k, q=q, d=4, dtype=torch.float32)
    out = init_parameters(MatchingNet(nn.Identity(), (4,), fce=True, fce_steps=2), 1)(sx, sy, qx, n)
    assert out.shape == (t, n * q, n) and torch.isfinite(out).all()
    assert SupportContext(4)(sx).shape == sx.shape
    assert AttentionLSTM(4, 2)(qx, sx).shape == qx.shape


def test_order_invariance_is_declared_truthfully():
    sx, sy, qx = _tasks(t=2, n=3, k=2, q=2, d=5)
    perm = torch.tensor([4, 0, 5, 2, 1, 3])
    for fce in (False, True):
        net = _net(d=5, fce=fce)
        assert net.order_invariant is (not fce)
        same = torch.allclose(net(sx, sy, qx, 3), net(sx[:, perm], sy[:, perm], qx, 3))
        assert same is (not fce)
    assert MatchingNet.order_invariant  # the class keeps the base's default


def test_label_permutation_permutes_the_outputs():
    sx, sy, qx = _tasks(t=1, n=4, k=2)
    perm = torch.tensor([2, 0, 3, 1])
    for fce in (False, True):
        net = _net(fce=fce)
        torch.testing.assert_close(net(sx, perm[sy], qx, 4)[..., perm], net(sx, sy, qx, 4))


def test_bf16_autocast_keeps_the_attention_in_fp32():
    net = init_parameters(MatchingNet(Conv4(hidden=8), (1, 28, 28), fce=True), 0)
    sx, qx = torch.rand(1, 5, 1, 28, 28), torch.rand(1, 10, 1, 28, 28)
    sy = torch.arange(5)[None]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(sx, sy, qx, ways=5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(1, 10))


# -- errors and repr ----------------------------------------------------------------------------


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="fce_steps must be an integer >= 1"):
        MatchingNet(nn.Identity(), (4,), fce=True, fce_steps=0)
    for bad in (0.0, -1.0, True):
        with pytest.raises(ValueError, match="scale must be a number > 0"):
            MatchingNet(nn.Identity(), (4,), scale=bad)
    with pytest.raises(ValueError, match="fce must be true or false"):
        MatchingNet(nn.Identity(), (4,), fce="yes")  # type: ignore[arg-type]
    maps = Conv4(hidden=4, pool=(True, True, False, False), flatten=False)
    with pytest.raises(ValueError, match=r"embeddings \[B, D\].*\[B, 4, 7, 7\].*flatten"):
        MatchingNet(maps, (1, 28, 28))
    net = MatchingNet(nn.Identity(), (4,))
    with pytest.raises(ValueError, match="at least one support example"):
        net(torch.randn(1, 4, 4), torch.tensor([[0, 0, 2, 2]]), torch.randn(1, 2, 4), ways=3)
    with pytest.raises(ValueError, match="MatchingNet classifies"):
        net(torch.randn(1, 4, 4), torch.randn(1, 4, 1), torch.randn(1, 2, 4))
    with pytest.raises(ValueError, match="query_x"):
        net(torch.randn(2, 4, 4), torch.zeros(2, 4, dtype=torch.long), torch.randn(1, 2, 4))
    fce = MatchingNet(nn.Identity(), (4,), fce=True)
    with pytest.raises(ValueError, match=r"built for examples of shape \(4,\)"):
        fce(torch.randn(1, 2, 5), torch.tensor([[0, 1]]), torch.randn(1, 2, 5), ways=2)


def test_repr_shows_the_hyper_parameters():
    text = repr(MatchingNet(Conv4(hidden=8), (1, 28, 28), fce=True, fce_steps=3, scale=10))
    assert "fce=True, fce_steps=3, scale=10" in text and "hidden=8" in text and "steps=3" in text
    assert "fce=False, fce_steps=5, scale=1" in repr(MatchingNet(Conv4(hidden=8), (1, 28, 28)))


# -- through the command line --------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in list_recipes() if "/matching-" in n])
def test_matching_recipes_build_the_papers_network(name):
    cfg = load_config(recipe_path(name))
    learner = build_run_learner(cfg, cfg.source()).eval()
    e = cfg.eval.episode
    assert e.ways == cfg.train.episode.ways and e.shots == cfg.train.episode.shots  # section 2.2
    assert cfg.objective == "classification" and learner.fce is ("-fce-" in name)
    assert learner.features == 64  # Conv4 on 28x28: 1x1x64 (section 4.1.1)
    sx, qx = torch.rand(1, e.ways * e.shots, 1, 28, 28), torch.rand(1, e.ways, 1, 28, 28)
    sy = torch.arange(e.ways).repeat_interleave(e.shots)[None]
    with torch.no_grad():
        assert learner(sx, sy, qx, ways=e.ways).shape == (1, e.ways, e.ways)


def test_tiny_manytask_run_then_load_run_scores_the_same(tmp_path, tiny_overrides):
    out = tmp_path / "run"
    overrides = [o for o in tiny_overrides if not o.startswith("train.val_")]
    recipe = "omniglot/matching-fce-5w1s"
    assert main(["run", recipe, *overrides, "train.val_every=0", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["learner"] == "matchingnet" and results["test"]["tasks"] == 8
    learner = manytask.load_run(out)
    assert learner.fce and not learner.order_invariant
    per_task = json.loads((out / "test_tasks.json").read_text())["per_task"]
    assert main(["eval", str(out), "--quiet"]) == 0
    again = json.loads(next(out.glob("eval-5w1s-*.json")).read_text())
    assert again["mean"] == pytest.approx(sum(per_task) / len(per_task))
