"""Tests for manytask.data.episodes: shapes, label/instance invariants, rotations, determinism."""

from __future__ import annotations

import itertools

import pytest
import torch

from manytask.data import Episode, EpisodeSampler, ImageStore, fixed_episodes

CLASSES, INSTANCES, SIZE = 24, 8, 6


def make_store(classes: int = CLASSES, instances: int = INSTANCES, alphabets=(10, 8, 4, 2)):
    """A store whose every image is unique: pixel (0, 0) = class, pixel (0, 1) = instance."""
    g = torch.Generator().manual_seed(123)
    images = torch.randint(0, 256, (classes, instances, SIZE, SIZE), generator=g, dtype=torch.uint8)
    images[:, :, 0, 0] = torch.arange(classes, dtype=torch.uint8).unsqueeze(1)
    images[:, :, 0, 1] = torch.arange(instances, dtype=torch.uint8)
    alphabet_of = torch.repeat_interleave(torch.arange(len(alphabets)), torch.tensor(alphabets))
    assert alphabet_of.numel() == classes
    return ImageStore(
        images=images,
        class_names=tuple(f"A{int(a)}/c{i}" for i, a in enumerate(alphabet_of)),
        alphabets=tuple(f"A{i}" for i in range(len(alphabets))),
        alphabet_of=alphabet_of,
        drawers=torch.zeros(classes, instances, dtype=torch.long),
        source="test",
    )


def locate(store: ImageStore, x: torch.Tensor, rotations=(0,)) -> tuple[int, int, int]:
    """(store class, instance, rotation index) of a delivered image [1, H, W]."""
    u8 = (x[0] * 255).round().to(torch.uint8)
    for r, angle in enumerate(rotations):
        back = torch.rot90(u8, -(angle // 90), dims=(0, 1))
        c, i = int(back[0, 0]), int(back[0, 1])
        if (
            c < store.num_classes
            and i < store.num_instances
            and torch.equal(back, store.images[c, i])
        ):
            return c, i, r
    raise AssertionError("image not found in the store")


@pytest.fixture(scope="module")
def store() -> ImageStore:
    return make_store()


def test_shapes_dtypes_and_range(store):
    ep = EpisodeSampler(store, ways=5, shots=2, queries=3, tasks=4, seed=0).sample()
    assert isinstance(ep, Episode)
    assert ep.support_x.shape == (4, 10, 1, SIZE, SIZE)
    assert ep.query_x.shape == (4, 15, 1, SIZE, SIZE)
    assert ep.support_y.shape == (4, 10) and ep.query_y.shape == (4, 15)
    assert ep.classes.shape == (4, 5)
    assert ep.support_x.dtype == ep.query_x.dtype == torch.float32
    assert ep.support_y.dtype == ep.query_y.dtype == ep.classes.dtype == torch.int64
    assert ep.support_x.is_contiguous() and ep.query_x.is_contiguous()
    assert float(ep.support_x.min()) >= 0.0 and float(ep.support_x.max()) <= 1.0
    assert (ep.tasks, ep.ways, ep.shots, ep.queries) == (4, 5, 2, 3)
    moved = ep.to("cpu")
    assert torch.equal(moved.query_x, ep.query_x)
    assert "ways=5" in repr(ep)


@pytest.mark.parametrize("group_by", ["none", "alphabet"])
@pytest.mark.parametrize("rotations", [(0,), (0, 90, 180, 270)])
def test_episode_invariants(store, group_by, rotations):
    n, k, q, t = 4, 2, 3, 6
    sampler = EpisodeSampler(
        store, n, k, q, t, rotations=rotations, group_by=group_by, seed=1
    )  # fmt: skip
    r = len(rotations)
    for ep in itertools.islice(sampler, 3):
        for task in range(t):
            cls = ep.classes[task]
            assert cls.unique().numel() == n, "classes distinct within a task"
            assert (cls >= 0).all() and (cls < store.num_classes * r).all()
            for y, size in ((ep.support_y[task], k), (ep.query_y[task], q)):
                assert torch.equal(torch.bincount(y, minlength=n), torch.full((n,), size))
            seen: dict[int, set[int]] = {}
            for xs, ys, part in (
                (ep.support_x[task], ep.support_y[task], "s"),
                (ep.query_x[task], ep.query_y[task], "q"),
            ):
                for x, y in zip(xs, ys, strict=True):
                    c, i, rot = locate(store, x, rotations)
                    assert c * r + rot == int(cls[y]), "image belongs to its label's class"
                    key = int(y)
                    assert i not in seen.setdefault(key, set()), f"instance repeated ({part})"
                    seen[key].add(i)
            if group_by == "alphabet":
                alpha = store.alphabet_of[cls // r]
                assert (alpha == alpha[0]).all(), "all classes of a task from one alphabet"


def test_rotation_matches_rot90(store):
    rotations = (0, 90, 180, 270)
    ep = EpisodeSampler(store, 5, 1, 2, 8, rotations=rotations, seed=3).sample()
    seen_rot = set()
    for task in range(ep.tasks):
        for x in ep.query_x[task]:
            c, i, r = locate(store, x, rotations)
            expected = torch.rot90(store.images[c, i], rotations[r] // 90, dims=(0, 1))
            assert torch.equal((x[0] * 255).round().to(torch.uint8), expected)
            torch.testing.assert_close(x[0], expected.float() / 255, rtol=1e-7, atol=0)
            seen_rot.add(r)
    assert seen_rot == {0, 1, 2, 3}


def test_pixels_are_images_over_255(store):
    ep = EpisodeSampler(store, 3, 1, 1, 2, seed=0).sample()
    c, i, _ = locate(store, ep.support_x[0, 0])
    # x * (1/255): within 1 ulp of x / 255, and ink (255) is exactly 1.0.
    torch.testing.assert_close(ep.support_x[0, 0, 0], store.images[c, i].float() / 255)
    ink = torch.full((2, 2), 255, dtype=torch.uint8)
    white = make_store(classes=3, instances=2, alphabets=(3,))
    white.images[:, :, 2:4, 2:4] = ink
    x = EpisodeSampler(white, 3, 1, 1, seed=0).sample().support_x
    assert bool((x[..., 2:4, 2:4] == 1.0).all())


def test_labels_and_positions_are_shuffled(store):
    ep = EpisodeSampler(store, 5, 3, 3, 50, seed=0).sample()
    sorted_support = torch.arange(5).repeat_interleave(3)
    # Over 50 tasks, some support set is not in label-sorted order, and the class -> label
    # map is not monotone (labels are not assigned by class id).
    assert any(not torch.equal(ep.support_y[t], sorted_support) for t in range(50))
    assert any(not bool((ep.classes[t].diff() > 0).all()) for t in range(50))
    assert not torch.equal(ep.support_y[0], ep.support_y[1]) or not torch.equal(
        ep.support_y[1], ep.support_y[2]
    )


def test_alphabet_excludes_small_alphabets(store):
    sampler = EpisodeSampler(store, 5, 1, 1, 64, group_by="alphabet", seed=0)
    assert set(sampler.excluded_alphabets) == {"A2", "A3"}  # 4 and 2 classes < 5
    ep = sampler.sample()
    assert set(store.alphabet_of[ep.classes].unique().tolist()) <= {0, 1}
    # With 4 rotations, the 2-class alphabet has 8 classes: everything qualifies.
    rotated = EpisodeSampler(store, 5, 1, 1, 4, rotations=(0, 90, 180, 270), group_by="alphabet")
    assert rotated.excluded_alphabets == ()
    with pytest.raises(ValueError, match=r"group_by='alphabet'.*largest has 10"):
        EpisodeSampler(store, 11, 1, 1, group_by="alphabet")


def test_determinism_and_generator(store):
    a = EpisodeSampler(store, 5, 1, 2, 4, seed=7).sample()
    b = EpisodeSampler(store, 5, 1, 2, 4, generator=torch.Generator().manual_seed(7)).sample()
    c = EpisodeSampler(store, 5, 1, 2, 4, seed=8).sample()
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_y, b.query_y)
    assert not torch.equal(a.classes, c.classes)
    unseeded = EpisodeSampler(store, 5, 1, 2, 4)
    again = EpisodeSampler(store, 5, 1, 2, 4, seed=unseeded.initial_seed)
    assert torch.equal(unseeded.sample().query_x, again.sample().query_x)


def test_state_dict_round_trip(store, tmp_path):
    sampler = EpisodeSampler(store, 5, 1, 2, 4, rotations=(0, 180), seed=0)
    sampler.sample()
    path = tmp_path / "state.pt"
    torch.save(sampler.state_dict(), path)
    expected = [sampler.sample() for _ in range(3)]
    resumed = EpisodeSampler(store, 5, 1, 2, 4, rotations=(0, 180), seed=999)
    resumed.load_state_dict(torch.load(path, weights_only=True))
    for e, got in zip(expected, itertools.islice(resumed, 3), strict=True):
        assert torch.equal(e.support_x, got.support_x) and torch.equal(e.query_y, got.query_y)
    other = EpisodeSampler(store, 4, 1, 2, 4)
    with pytest.raises(ValueError, match="hyperparameters"):
        other.load_state_dict(sampler.state_dict())


def test_global_rng_untouched(store):
    before = torch.random.get_rng_state()
    sampler = EpisodeSampler(store, 5, 1, 2, 4, rotations=(0, 90), group_by="alphabet")
    sampler.sample()
    EpisodeSampler(store, 5, 1, 2, 4, seed=0).sample()
    list(fixed_episodes(store, 5, 1, 2, num_episodes=5, batch_size=2))
    assert torch.equal(before, torch.random.get_rng_state())


def test_fixed_episodes_identical_across_calls_and_batch_sizes(store):
    kwargs = dict(num_episodes=11, seed=5, rotations=(0, 90))
    whole = list(fixed_episodes(store, 5, 1, 2, batch_size=11, **kwargs))
    assert len(whole) == 1
    again = list(fixed_episodes(store, 5, 1, 2, batch_size=11, **kwargs))
    assert torch.equal(whole[0].query_x, again[0].query_x)
    for bs in (1, 3, 4):
        fixed = fixed_episodes(store, 5, 1, 2, batch_size=bs, **kwargs)
        batches = list(fixed)
        assert len(fixed) == len(batches) == -(-11 // bs)
        for field in ("support_x", "support_y", "query_x", "query_y", "classes"):
            joined = torch.cat([getattr(b, field) for b in batches])
            assert torch.equal(joined, getattr(whole[0], field)), (bs, field)
    fixed = fixed_episodes(store, 5, 1, 2, batch_size=4, **kwargs)
    assert torch.equal(next(iter(fixed)).support_x, next(iter(fixed)).support_x)  # re-iterable
    assert "num_episodes=11" in repr(fixed)
    other_seed = list(fixed_episodes(store, 5, 1, 2, num_episodes=11, seed=6, batch_size=11))
    assert not torch.equal(other_seed[0].classes, whole[0].classes)


def test_repr_shows_hyperparameters(store):
    text = repr(EpisodeSampler(store, 5, 1, 2, 4, rotations=(0, 90), group_by="alphabet"))
    for part in ("ways=5", "shots=1", "queries=2", "tasks=4", "rotations=(0, 90)", "alphabet"):
        assert part in text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(ways=25, shots=1, queries=1), r"ways=25.*only 24 classes"),
        (dict(ways=97, shots=1, queries=1, rotations=(0, 90, 180, 270)), r"only 96 classes"),
        (dict(ways=5, shots=4, queries=5), r"shots \+ queries = 4 \+ 5 = 9.*only 8 instances"),
        (dict(ways=0, shots=1, queries=1), r"ways must be a positive int; got 0"),
        (dict(ways=5, shots=-1, queries=1), r"shots must be a positive int"),
        (dict(ways=5, shots=1, queries=0), r"queries must be a positive int"),
        (dict(ways=5, shots=1, queries=1, tasks=0), r"tasks must be a positive int"),
        (dict(ways=5.0, shots=1, queries=1), r"ways must be a positive int"),
        (dict(ways=5, shots=1, queries=1, rotations=(0, 45)), r"multiples of 90"),
        (dict(ways=5, shots=1, queries=1, rotations=(0, 360)), r"distinct"),
        (dict(ways=5, shots=1, queries=1, rotations=()), r"at least one angle"),
        (dict(ways=5, shots=1, queries=1, group_by="drawer"), r"group_by must be one of"),
        (dict(ways=5, shots=1, queries=1, seed=0, generator=torch.Generator()), r"not both"),
    ],
)
def test_errors(store, kwargs, match):
    with pytest.raises(ValueError, match=match):
        EpisodeSampler(store, **kwargs)


def test_fixed_episodes_errors(store):
    with pytest.raises(ValueError, match="num_episodes"):
        fixed_episodes(store, 5, 1, 1, num_episodes=0)
    with pytest.raises(ValueError, match="ways=30"):
        fixed_episodes(store, 30, 1, 1)


def test_ways_equal_to_all_classes_and_all_instances():
    store = make_store(classes=6, instances=4, alphabets=(6,))
    ep = EpisodeSampler(store, 6, 2, 2, 3, seed=0).sample()  # topk path and argsort path
    assert (ep.classes.sort(dim=1).values == torch.arange(6)).all()


def test_pickle_keeps_the_stream(store):
    import pickle

    sampler = EpisodeSampler(store, 5, 1, 2, 4, seed=0)
    sampler.sample()
    clone = pickle.loads(pickle.dumps(sampler))
    assert torch.equal(clone.sample().query_x, sampler.sample().query_x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_stream_equals_cpu_stream(store):
    cpu = EpisodeSampler(store, 5, 1, 2, 4, rotations=(0, 90), seed=0).sample()
    gpu = EpisodeSampler(store, 5, 1, 2, 4, rotations=(0, 90), seed=0, device="cuda").sample()
    assert gpu.support_x.is_cuda and gpu.query_y.is_cuda
    assert torch.equal(gpu.to("cpu").query_x, cpu.query_x)
    fixed = next(iter(fixed_episodes(store, 5, 1, 2, num_episodes=4, device="cuda")))
    assert torch.equal(
        fixed.to("cpu").support_x,
        next(iter(fixed_episodes(store, 5, 1, 2, num_episodes=4))).support_x,
    )
