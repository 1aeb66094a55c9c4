"""The sinusoid task source: the formula and ranges of Finn et al. (2017), seeds, resume."""

from __future__ import annotations

import math

import pytest
import torch

from manytask.config import ConfigError, load_config
from manytask.data.sinusoid import SinusoidTasks, part_seed


def test_targets_are_a_sin_x_minus_phase_with_the_papers_ranges():
    """y = A sin(x - phase), A ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5] (not sin(phase * x))."""
    ep = SinusoidTasks().sampler("train", None, 10, 10, 4000, seed=0).sample()
    amplitude, phase = ep.params[:, 0], ep.params[:, 1]
    for x, y in ((ep.support_x, ep.support_y), (ep.query_x, ep.query_y)):
        expected = amplitude.view(-1, 1, 1) * torch.sin(x - phase.view(-1, 1, 1))
        torch.testing.assert_close(y, expected, rtol=0, atol=0)
        # Recompute each target from its own scalars, in float64, independently of the library.
        t, k = 123, 7
        a, p, xv = float(amplitude[t]), float(phase[t]), float(x[t, k, 0])
        assert float(y[t, k, 0]) == pytest.approx(a * math.sin(xv - p), abs=1e-5)
    # The ranges, and that the draws fill them (4000 tasks, 80k points).
    xs = torch.cat([ep.support_x, ep.query_x], 1)
    assert 0.1 <= float(amplitude.min()) < 0.15 and 4.95 < float(amplitude.max()) <= 5.0
    assert 0.0 <= float(phase.min()) < 0.05 and math.pi - 0.05 < float(phase.max()) <= math.pi
    assert -5.0 <= float(xs.min()) < -4.99 and 4.99 < float(xs.max()) <= 5.0
    # Uniform: the means sit at the middle of each range.
    assert float(amplitude.mean()) == pytest.approx(2.55, abs=0.1)
    assert float(phase.mean()) == pytest.approx(math.pi / 2, abs=0.06)
    assert float(xs.mean()) == pytest.approx(0.0, abs=0.05)


def test_the_same_seed_gives_the_same_tasks_and_parts_do_not_overlap():
    src = SinusoidTasks()
    a = src.sampler("train", None, 5, 5, 8, seed=3).sample()
    b = src.sampler("train", None, 5, 5, 8, seed=3).sample()
    assert torch.equal(a.params, b.params) and torch.equal(a.support_x, b.support_x)
    # Training seed s never replays the test tasks of any seed.
    seeds = {part_seed(s, p) for s in range(50) for p in ("train", "val", "test")}
    assert len(seeds) == 150
    test = next(iter(src.fixed("test", None, 5, 5, 8, seed=1, batch_size=8)))
    train = src.sampler("train", None, 5, 5, 8, seed=1).sample()
    assert not torch.equal(test.params, train.params)


def test_fixed_tasks_do_not_depend_on_the_batch_size():
    src = SinusoidTasks()
    one = src.fixed("test", None, 5, 10, 600, seed=0, batch_size=600)
    many = src.fixed("test", None, 5, 10, 600, seed=0, batch_size=7)
    assert len(one) == 1 and len(many) == 86 and many.num_episodes == 600
    whole = next(iter(one))
    parts = list(many)
    assert sum(p.tasks for p in parts) == 600
    torch.testing.assert_close(torch.cat([p.query_y for p in parts]), whole.query_y)
    torch.testing.assert_close(torch.cat([p.params for p in parts]), whole.params)


def test_the_sampler_resumes_its_stream_and_refuses_other_hyperparameters():
    src = SinusoidTasks()
    s = src.sampler("train", None, 5, 5, 4, seed=0)
    s.sample()
    state = s.state_dict()
    after = [s.sample().params for _ in range(3)]
    fresh = src.sampler("train", None, 5, 5, 4, seed=99)
    fresh.load_state_dict(state)
    assert all(torch.equal(fresh.sample().params, p) for p in after)
    other = src.sampler("train", None, 10, 5, 4, seed=0)
    with pytest.raises(ValueError, match="saved by a SinusoidSampler"):
        other.load_state_dict(state)


def test_noise_is_seeded_and_added_to_the_targets():
    ep = SinusoidTasks(noise=0.3).sampler("train", None, 50, 50, 200, seed=0).sample()
    a, p = ep.params[:, :1, None], ep.params[:, 1:, None]
    residual = ep.support_y - a.view(-1, 1, 1) * torch.sin(ep.support_x - p.view(-1, 1, 1))
    assert float(residual.std()) == pytest.approx(0.3, rel=0.05)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"amplitude": (5.0, 0.1)}, "amplitude must be finite with low < high"),
        ({"phase": "pi"}, "phase must be a pair"),
        ({"x_range": (0, float("inf"))}, "x_range must be finite"),
        ({"noise": -1}, "noise must be a number >= 0"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SinusoidTasks(**kwargs)


def test_bad_episode_shapes_are_clear_errors():
    src = SinusoidTasks()
    with pytest.raises(ValueError, match="no classes: ways must be None"):
        src.sampler("train", 5, 5, 5, 4, seed=0)
    with pytest.raises(ValueError, match="shots must be a positive int"):
        src.fixed("test", None, 0, 5, 10, seed=0, batch_size=4)
    with pytest.raises(ValueError, match="part must be one of"):
        src.sampler("holdout", None, 5, 5, 4, seed=0)  # type: ignore[arg-type]


def test_a_recipe_names_it_and_its_arguments_are_checked():
    recipe = {
        "family": "meta",
        "data": {"dataset": "sinusoid", "amplitude": [0.1, 5.0]},
        "model": {"learner": "protonet"},
        "train": {"episode": {"shots": 5, "queries": 10}},
        "eval": {"episode": {"shots": 5, "queries": 10}},
    }
    with pytest.raises(ConfigError, match="does not do regression"):
        load_config(recipe)
    with pytest.raises(ConfigError, match=r"data\.amplitud.*Did you mean 'amplitude'"):
        load_config({**recipe, "data": {"dataset": "sinusoid", "amplitud": [0.1, 5.0]}})
