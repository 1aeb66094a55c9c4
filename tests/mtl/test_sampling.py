"""Task sampling against its formulas, and seeded epoch batches."""

from __future__ import annotations

import math

import pytest
import torch

from manytask.mtl.sampling import EpochBatches, TaskSampler, task_probabilities

SIZES = [100, 400, 1600, 6400]


def test_probabilities_follow_their_formulas():
    n = torch.tensor(SIZES, dtype=torch.float64)
    torch.testing.assert_close(
        task_probabilities(SIZES), torch.full((4,), 0.25, dtype=torch.float64)
    )
    torch.testing.assert_close(task_probabilities(SIZES, "proportional"), n / n.sum())
    for T in (0.5, 1.0, 2.0, 5.0):
        want = n ** (1 / T) / (n ** (1 / T)).sum()
        torch.testing.assert_close(task_probabilities(SIZES, "temperature", T), want)
    # T = 1 is proportional; a huge T is uniform.
    torch.testing.assert_close(
        task_probabilities(SIZES, "temperature", 1.0), task_probabilities(SIZES, "proportional")
    )
    torch.testing.assert_close(
        task_probabilities(SIZES, "temperature", 1e9), task_probabilities(SIZES), atol=1e-8, rtol=0
    )


@pytest.mark.parametrize(
    ("strategy", "T"), [("uniform", 1.0), ("proportional", 1.0), ("temperature", 3.0)]
)
def test_one_task_per_step_is_drawn_with_probability_p(strategy, T):
    sampler = TaskSampler(SIZES, tasks_per_step=1, strategy=strategy, temperature=T, seed=3)
    draws = 20000
    counts = torch.bincount(torch.cat([sampler.sample() for _ in range(draws)]), minlength=4)
    p = task_probabilities(SIZES, strategy, T)
    for i in range(4):
        sd = math.sqrt(draws * p[i] * (1 - p[i]))
        assert abs(counts[i].item() - draws * p[i].item()) < 4 * sd, (i, counts.tolist())


def test_several_tasks_per_step_are_distinct_and_seeded():
    a = TaskSampler(SIZES, tasks_per_step=3, strategy="proportional", seed=7)
    b = TaskSampler(SIZES, tasks_per_step=3, strategy="proportional", seed=7)
    for _ in range(50):
        x, y = a.sample(), b.sample()
        assert torch.equal(x, y)
        assert len(set(x.tolist())) == 3 and x.tolist() == sorted(x.tolist())
    assert TaskSampler(SIZES).sample().tolist() == [0, 1, 2, 3]  # every task: nothing drawn
    assert TaskSampler(SIZES, tasks_per_step=9).sample().tolist() == [0, 1, 2, 3]


def test_sampler_state_round_trip_and_refusal():
    a = TaskSampler(SIZES, tasks_per_step=2, seed=1)
    for _ in range(5):
        a.sample()
    b = TaskSampler(SIZES, tasks_per_step=2, seed=1)
    b.load_state_dict(a.state_dict())
    assert [a.sample().tolist() for _ in range(10)] == [b.sample().tolist() for _ in range(10)]
    other = TaskSampler(SIZES, tasks_per_step=3, seed=1)
    with pytest.raises(ValueError, match="run's own config"):
        other.load_state_dict(a.state_dict())
    assert "tasks_per_step=2" in repr(a)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"sizes": [10, 0]}, "positive counts"),
    ({"sizes": [10], "tasks_per_step": 0}, "tasks_per_step"),
    ({"sizes": [10], "strategy": "random"}, "strategy"),
    ({"sizes": [10], "strategy": "temperature", "temperature": 0}, "temperature"),
])  # fmt: skip
def test_sampler_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TaskSampler(**kwargs)


def test_epoch_batches_cover_every_example_once_per_epoch():
    b = EpochBatches([12, 5], batch_size=4, seed=0)
    epoch = torch.cat([b.next(0) for _ in range(3)])
    assert sorted(epoch.tolist()) == list(range(12))
    second = torch.cat([b.next(0) for _ in range(3)])
    assert sorted(second.tolist()) == list(range(12)) and not torch.equal(epoch, second)
    # 5 examples, batches of 4: one batch per epoch, a fresh permutation each time.
    firsts = [b.next(1) for _ in range(3)]
    assert all(len(x) == 4 and len(set(x.tolist())) == 4 for x in firsts)
    # Fewer examples than the batch size: the whole stream.
    assert sorted(EpochBatches([3], batch_size=10).next(0).tolist()) == [0, 1, 2]


def test_epoch_batches_resume_exactly():
    a = EpochBatches([7, 9], batch_size=3, seed=5)
    for _ in range(4):
        a.next(0), a.next(1)
    b = EpochBatches([7, 9], batch_size=3, seed=5)
    b.load_state_dict(a.state_dict())
    for _ in range(6):
        assert torch.equal(a.next(0), b.next(0)) and torch.equal(a.next(1), b.next(1))
    with pytest.raises(ValueError, match="run's own config"):
        EpochBatches([7, 9], batch_size=4, seed=5).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="no training data"):
        EpochBatches([3, 0], batch_size=2)
