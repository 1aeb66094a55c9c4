"""Omniglot sequences for the online protocol of Santoro et al. (2016).

"Meta-Learning with Memory-Augmented Neural Networks" trains and tests on *sequences*: an
episode draws ``N`` classes (5 in the paper's Table 1) and presents ``K`` instances of each
(10) in a random order, ``L = N*K`` steps (50); the class -> label map is drawn anew for every
episode; the label of each step is shown at the next step, and the label of every step is
predicted. So every step is both a support point (its label is revealed, one step late) and a
query point (its label is predicted before it is revealed).

In the spine's terms an episode is an :class:`~manytask.data.Episode` whose query set **is**
the support sequence: ``query_x`` is the same tensor as ``support_x``, ``query_y`` the same
as ``support_y`` (``[T, L]``, each of the ``N`` labels exactly ``K`` times). Only a learner that
reads it online may be trained on it (``MANN`` with ``protocol="online"``, whose prediction at
step ``t`` uses ``x_1..x_t`` and ``y_1..y_{t-1}``); a set-based learner would find each query in
the support set with its label. The config refuses any other learner.

``shots`` is the number of instances of each class in the sequence (``K``) and ``queries``
must equal it (the query set is the sequence). Drawing: an
:class:`~manytask.data.EpisodeSampler` with 1 support and ``K - 1`` query instances per class
(``K`` distinct instances of ``N`` distinct classes, random labels), then one uniform random
permutation of the ``N*K`` steps per task, from the same generator, so the stream is seeded and
resumable like every episode stream.

Where this differs from the paper: the images are the 28x28 Omniglot images (the paper
downscaled to 20x20: pass ``image_size=20`` with the archives), and there is no per-image
augmentation (the paper adds random translations and rotations); rotations by multiples of
90 degrees make new classes, as in the paper. The paper trains on 1200 characters and tests on
the other 423: the Vinyals split's ``trainval`` (1028 + 172) and ``test`` (423) parts.

Example:
    >>> tasks = OmniglotSequences(source="embedded", rotations=(0,))
    >>> ep = tasks.sampler("train", ways=5, shots=10, queries=10, tasks=2, seed=0).sample()
    >>> tuple(ep.support_x.shape), ep.query_x is ep.support_x
    ((2, 50, 1, 28, 28), True)
    >>> torch.bincount(ep.support_y[0]).tolist()
    [10, 10, 10, 10, 10]
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from manytask.data.episodes import Episode, EpisodeSampler, _gather
from manytask.data.omniglot_tasks import OmniglotTasks, Part
from manytask.data.store import ImageStore

__all__ = ["FixedSequences", "OmniglotSequences", "SequenceSampler", "as_sequence"]


def as_sequence(episode: Episode, order: Tensor) -> Episode:
    """The support and query examples of ``episode`` as one sequence in ``order``.

    Args:
        episode: ``T`` tasks; their ``N*K1`` support and ``N*Q`` query examples are joined.
        order: ``[T, L]`` with ``L = N*(K1+Q)``: a permutation of ``0..L-1`` per task (the
            support examples first, then the queries).

    Returns:
        An episode whose query set is its support sequence (the same tensors).
    """
    x = torch.cat([episode.support_x, episode.query_x], dim=1)
    y = torch.cat([episode.support_y, episode.query_y], dim=1)
    order = order.to(x.device)
    rows = torch.arange(x.shape[0], device=x.device).unsqueeze(1)
    x, y = x[rows, order], y.gather(1, order)
    return Episode(support_x=x, support_y=y, query_x=x, query_y=y, classes=episode.classes)


def _instances(shots: int, queries: int) -> int:
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 2:
        raise ValueError(
            f"shots is the number of instances of each class in a sequence and must be an int "
            f">= 2 (the first presentation of a class cannot be known); got {shots!r}"
        )
    if queries != shots:
        raise ValueError(
            f"queries={queries} but shots={shots}: in a sequence every step is predicted, so "
            f"the query set is the sequence itself; set queries={shots}"
        )
    return shots


class SequenceSampler:
    """Endless meta-batches of sequences of ``ways`` classes x ``shots`` instances, shuffled.

    Args:
        store: the images.
        ways: classes per sequence ``N``.
        shots: instances of each class ``K`` (>= 2).
        tasks: sequences per meta-batch ``T``.
        rotations: as in :class:`~manytask.data.EpisodeSampler`.
        group_by: as in :class:`~manytask.data.EpisodeSampler`.
        device: where the sequences are delivered.
        seed: the seed of the sampler's CPU generator.
    """

    def __init__(
        self,
        store: ImageStore,
        ways: int,
        shots: int,
        tasks: int = 1,
        *,
        rotations: Sequence[int] = (0,),
        group_by: Literal["none", "alphabet"] = "none",
        device: torch.device | str | None = None,
        seed: int | None = None,
    ) -> None:
        self.shots = _instances(shots, shots)
        self.episodes = EpisodeSampler(
            store, ways, 1, shots - 1, tasks, rotations=rotations, group_by=group_by,
            device=device, seed=seed,
        )  # fmt: skip
        self.ways, self.tasks = ways, tasks
        self.generator = self.episodes.generator

    def __repr__(self) -> str:
        return (
            f"SequenceSampler(ways={self.ways}, shots={self.shots}, tasks={self.tasks}, "
            f"rotations={self.episodes.rotations}, device={self.episodes.device})"
        )

    def sample(self) -> Episode:
        """``T`` sequences; ``query_x is support_x`` (``[T, N*K, 1, H, W]``)."""
        episode = self.episodes.sample()
        length = self.ways * self.shots
        order = torch.rand(self.tasks, length, generator=self.generator).argsort(dim=1, stable=True)
        return as_sequence(episode, order)

    def __iter__(self) -> Iterator[Episode]:
        while True:
            yield self.sample()

    def state_dict(self) -> dict[str, Any]:
        """The generator state and hyperparameters (see ``EpisodeSampler.state_dict``)."""
        return self.episodes.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.episodes.load_state_dict(state)


class FixedSequences:
    """``num_episodes`` fixed, seeded sequences, the same whatever ``batch_size`` or device.

    Every index and every order is drawn up front from one generator seeded with ``seed``;
    iterating gathers ``batch_size`` sequences at a time.
    """

    def __init__(
        self,
        store: ImageStore,
        ways: int,
        shots: int,
        num_episodes: int = 600,
        *,
        seed: int = 0,
        rotations: Sequence[int] = (0,),
        batch_size: int = 32,
        group_by: Literal["none", "alphabet"] = "none",
        device: torch.device | str | None = None,
    ) -> None:
        _instances(shots, shots)
        for name, value in (("num_episodes", num_episodes), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        self.num_episodes, self.batch_size, self.seed = num_episodes, batch_size, seed
        self._sampler = EpisodeSampler(
            store, ways, 1, shots - 1, 1, rotations=rotations, group_by=group_by,
            device=device, seed=seed,
        )  # fmt: skip
        g = self._sampler.generator
        self._draw = self._sampler._draw(num_episodes, g)
        self._order = torch.rand(num_episodes, ways * shots, generator=g).argsort(
            dim=1, stable=True
        )
        self.ways, self.shots = ways, shots

    def __len__(self) -> int:
        """Number of batches."""
        return -(-self.num_episodes // self.batch_size)

    def __iter__(self) -> Iterator[Episode]:
        s = self._sampler
        for start in range(0, self.num_episodes, self.batch_size):
            stop = min(start + self.batch_size, self.num_episodes)
            episode = _gather(s._flat_images, self._draw.rows(start, stop), s)
            yield as_sequence(episode, self._order[start:stop])

    def __repr__(self) -> str:
        return (
            f"FixedSequences(ways={self.ways}, shots={self.shots}, "
            f"num_episodes={self.num_episodes}, seed={self.seed}, batch_size={self.batch_size})"
        )


class OmniglotSequences:
    """Santoro et al.'s sequences of Omniglot characters, as a task source.

    Takes the arguments of :class:`~manytask.data.omniglot_tasks.OmniglotTasks` (image size,
    source, split and its parts, rotations, grouping). ``sampler``/``fixed`` take
    ``shots`` = instances of each class in a sequence and ``queries`` equal to it.
    """

    problem = "classification"
    out_features = None
    layout: ClassVar[str] = "sequence"
    """The query set of an episode is its support sequence (the config checks the learner)."""

    def __init__(
        self,
        image_size: int = 28,
        source: Literal["auto", "archives", "embedded"] = "auto",
        split: Literal["vinyals", "lake", "small1", "small2"] = "vinyals",
        train_part: str = "train",
        val_part: str = "val",
        test_part: str = "test",
        rotations: Sequence[int] = (0, 90, 180, 270),
        group_by: Literal["none", "alphabet"] = "none",
        data_dir: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
    ) -> None:
        self.images = OmniglotTasks(
            image_size, source, split, train_part, val_part, test_part, rotations, group_by,
            data_dir, cache_dir, progress,
        )  # fmt: skip

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Per-example input shape ``(1, image_size, image_size)``."""
        return self.images.in_shape

    def __repr__(self) -> str:
        return repr(self.images).replace("OmniglotTasks", "OmniglotSequences", 1)

    def describe(self, part: Part) -> str:
        """``"vinyals/test sequences"``."""
        return f"{self.images.describe(part)} sequences"

    def classes(self, part: Part) -> int:
        """Classes available in ``part``, rotations counted."""
        return self.images.classes(part)

    def sampler(
        self,
        part: Part,
        ways: int,
        shots: int,
        queries: int,
        tasks: int,
        *,
        seed: int,
        device: torch.device | str | None = None,
    ) -> SequenceSampler:
        """An endless, resumable stream of ``tasks`` sequences of ``ways`` x ``shots`` steps."""
        _instances(shots, queries)
        return SequenceSampler(
            self.images.store(part), ways, shots, tasks, rotations=self.images.rotations,
            group_by=self.images.group_by, device=device, seed=seed,
        )  # fmt: skip

    def fixed(
        self,
        part: Part,
        ways: int,
        shots: int,
        queries: int,
        episodes: int,
        *,
        seed: int,
        batch_size: int,
        device: torch.device | str | None = None,
    ) -> FixedSequences:
        """``episodes`` fixed, seeded sequences from ``part``, ``batch_size`` at a time."""
        _instances(shots, queries)
        return FixedSequences(
            self.images.store(part), ways, shots, episodes, seed=seed,
            rotations=self.images.rotations, batch_size=batch_size,
            group_by=self.images.group_by, device=device,
        )  # fmt: skip
