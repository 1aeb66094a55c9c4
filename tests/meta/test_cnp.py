"""Feedforward + average (CNP): the paper's equations computed naively, and its properties."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from manytask.config import load_config
from manytask.meta import CNP
from manytask.meta.cnp import class_means
from manytask.nn import Flatten, init_parameters
from manytask.recipes import recipe_path
from manytask.typed import ConfigError


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Small models run fastest on one intra-op thread (and do not fight a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cnp(**kw) -> CNP:
    kw.setdefault("encoder_hidden", (16, 16))
    kw.setdefault("representation", 8)
    kw.setdefault("decoder_hidden", (16,))
    return init_parameters(CNP(Flatten((6,)), in_shape=(6,), **kw), 0).eval()


def _tasks(t=3, n=4, k=2, q=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(t, n * k, 6, generator=g)
    sy = torch.stack([torch.randperm(n * k, generator=g) % n for _ in range(t)])
    qx = torch.randn(t, n * q, 6, generator=g)
    return sx, sy, qx


def test_class_mode_is_eqs_2_to_4_with_one_representation_per_class():
    cnp = _cnp()
    sx, sy, qx = _tasks()
    logits = cnp(sx, sy, qx, ways=4)
    assert logits.shape == (3, 12, 4)
    for i in range(3):
        for c in range(4):
            r_c = cnp.h(sx[i][sy[i] == c]).mean(0)  # eq. 2 then eq. 3 within class c
            expect = cnp.g(torch.cat([qx[i], r_c.expand(12, -1)], -1)).squeeze(-1)  # eq. 4
            torch.testing.assert_close(logits[i, :, c], expect, rtol=1e-5, atol=1e-5)


def test_set_mode_averages_encoded_pairs_and_decodes_ways_logits():
    cnp = _cnp(ways=4, aggregate="set")
    sx, sy, qx = _tasks()
    logits = cnp(sx, sy, qx, ways=4)
    for i in range(3):
        r = cnp.h(torch.cat([sx[i], F.one_hot(sy[i], 4).float()], -1)).mean(0)
        expect = cnp.g(torch.cat([qx[i], r.expand(12, -1)], -1))
        torch.testing.assert_close(logits[i], expect, rtol=1e-5, atol=1e-5)


def test_regression_predicts_a_mean_and_a_raw_scale_from_the_mean_of_pairs():
    cnp = init_parameters(CNP(Flatten((1,)), in_shape=(1,), out_features=1), 0)
    g = torch.Generator().manual_seed(0)
    sx, sy, qx = (torch.randn(2, m, 1, generator=g) for m in (5, 5, 7))
    out = cnp(sx, sy, qx)
    assert out.shape == (2, 7, 2) and cnp.mode == "set"
    r = cnp.h(torch.cat([sx[1], sy[1]], -1)).mean(0)
    torch.testing.assert_close(out[1], cnp.g(torch.cat([qx[1], r.expand(7, -1)], -1)))


@pytest.mark.parametrize("kw", [{}, {"ways": 4, "aggregate": "set"}])
def test_the_mean_ignores_duplicated_support_examples(kw):
    # The aggregation is a mean: showing every support example twice changes nothing.
    cnp = _cnp(**kw)
    sx, sy, qx = _tasks()
    once = cnp(sx, sy, qx, ways=4)
    twice = cnp(sx.repeat(1, 2, 1), sy.repeat(1, 2), qx, ways=4)
    torch.testing.assert_close(twice, once, rtol=1e-5, atol=1e-5)


def test_class_mode_is_equivariant_to_relabelling_and_takes_any_ways():
    cnp = _cnp(ways=5)
    sx, sy, qx = _tasks(n=4)
    perm = torch.tensor([2, 0, 3, 1])
    base = cnp(sx, sy, qx, ways=4)  # built at 5 ways, called at 4: one logit per class
    torch.testing.assert_close(cnp(sx, perm[sy], qx, ways=4)[..., perm], base)


def test_one_encoder_pass_for_support_and_query():
    calls = []
    enc = Flatten((6,))
    enc.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    cnp = CNP(enc, in_shape=(6,))
    sx, sy, qx = _tasks(t=2, n=3, k=2, q=4)
    cnp(sx, sy, qx, ways=3)
    assert calls == [2 * 6 + 2 * 12]


def test_bad_arguments_and_batches_say_what_to_do():
    with pytest.raises(ValueError, match="aggregate='class' needs classes"):
        CNP(Flatten((1,)), in_shape=(1,), out_features=1, aggregate="class")
    with pytest.raises(ValueError, match="needs ways >= 2"):
        CNP(Flatten((6,)), in_shape=(6,), aggregate="set")
    with pytest.raises(ValueError, match="aggregate must be"):
        CNP(Flatten((6,)), in_shape=(6,), aggregate="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="encoder_hidden must be positive ints"):
        CNP(Flatten((6,)), in_shape=(6,), encoder_hidden=(16, 0))
    sx, sy, qx = _tasks(n=3)
    with pytest.raises(ValueError, match=r"cannot classify 3-way tasks\. Build it with ways=3"):
        _cnp(ways=5, aggregate="set")(sx, sy, qx, ways=3)
    with pytest.raises(ValueError, match="built for classification but got a regression"):
        _cnp()(sx, torch.randn(3, 6, 1), qx)
    with pytest.raises(ValueError, match="at least one support example"):
        _cnp()(sx, torch.zeros_like(sy), qx, ways=3)


def test_class_means_is_the_mean_of_each_class():
    r = torch.arange(12.0).view(1, 6, 2)
    y = torch.tensor([[1, 0, 1, 0, 2, 2]])
    torch.testing.assert_close(
        class_means(r, y, 3), torch.tensor([[[4.0, 5.0], [2.0, 3.0], [9.0, 10.0]]])
    )


def test_repr_shows_the_hyper_parameters():
    text = repr(CNP(nn.Identity(), in_shape=(4,)))
    assert "aggregate='auto' (class)" in text and "representation=128" in text
    assert "encoder_hidden=(128, 128, 128)" in text and "decoder_hidden=(128, 128)" in text


def test_a_sinusoid_run_defaults_to_and_requires_the_gaussian_objective():
    recipe = recipe_path("sinusoid/cnp-k5")
    assert load_config(recipe).objective == "gaussian_nll"
    assert load_config(recipe, ["objective=auto"]).objective == "gaussian_nll"
    with pytest.raises(ConfigError, match=r"'cnp' makes predictions for the objective 'gauss"):
        load_config(recipe, ["objective=regression"])


def test_bad_recipe_arguments_are_config_errors():
    # Found by hand: representation=-3 used to end in a traceback at set-up.
    recipe = recipe_path("sinusoid/cnp-k5")
    with pytest.raises(ConfigError, match=r"model.args.representation: -3 is out of range"):
        load_config(recipe, ["model.args.representation=-3"])
    with pytest.raises(ConfigError, match=r"model.args.encoder_hidden\[1\]: 0 is out of range"):
        load_config(recipe, ["model.args.encoder_hidden=[64,0]"])
    with pytest.raises(ConfigError, match="Did you mean 'aggregate'"):
        load_config(recipe, ["model.args.agregate=set"])
