"""Few-shot sinusoid regression (Finn, Abbeel & Levine, ICML 2017, section 5.1).

Each task is a sine wave ``y = A * sin(x - phase)`` with amplitude ``A ~ U[0.1, 5.0]`` and
phase ``phase ~ U[0, pi]``; its points have ``x ~ U[-5, 5]``. A learner sees ``K`` support
points ``(x, y)`` of a new task and predicts ``y`` at the query points; the loss and the
reported metric are the mean squared error (the ``regression`` objective).

There are no classes and no held-out "classes": meta-training, validation and meta-test tasks
come from the same distribution. They are kept apart by their random streams instead: every
part draws from a generator seeded with ``3 * seed + {train: 0, val: 1, test: 2}``, so the
training stream of seed ``s`` never replays the test tasks of any seed.

Every task is drawn from a CPU ``torch.Generator`` only (never the global RNG), in a fixed
order (all amplitudes and phases of a batch, then all ``x``), so the stream is the same on
every machine and device. :class:`SinusoidSampler` saves and restores its generator for exact
resume; :class:`FixedSinusoids` draws all its tasks up front, so task ``i`` is the same
whatever the batch size it is delivered with.

Example:
    >>> tasks = SinusoidTasks()
    >>> ep = tasks.sampler("train", None, shots=5, queries=10, tasks=4, seed=0).sample()
    >>> tuple(ep.support_x.shape), tuple(ep.support_y.shape), tuple(ep.query_x.shape)
    ((4, 5, 1), (4, 5, 1), (4, 10, 1))
    >>> amplitude, phase = ep.params[0]
    >>> bool(torch.allclose(ep.support_y[0], amplitude * torch.sin(ep.support_x[0] - phase)))
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

import torch

from manytask.data.episodes import RegressionEpisode

__all__ = ["FixedSinusoids", "SinusoidSampler", "SinusoidTasks"]

Part = Literal["train", "val", "test"]
_PART_INDEX = {"train": 0, "val": 1, "test": 2}


def _check_range(name: str, value: Any) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair [low, high] of numbers, got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise ValueError(f"{name} must be finite with low < high, got [{low}, {high}]")
    return low, high


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def part_seed(seed: int, part: str) -> int:
    """The generator seed of ``part``: ``3 * seed + {train: 0, val: 1, test: 2}``.

    Example:
        >>> part_seed(0, "train"), part_seed(0, "test"), part_seed(1, "train")
        (0, 2, 3)
    """
    if part not in _PART_INDEX:
        raise ValueError(f"part must be one of {', '.join(_PART_INDEX)}, got {part!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return 3 * seed + _PART_INDEX[part]


class SinusoidTasks:
    """The sinusoid task source: samplers and fixed test tasks of ``A * sin(x - phase)``.

    Args:
        amplitude: the range ``[low, high]`` of the uniform amplitude (MAML: ``[0.1, 5.0]``).
        phase: the range of the uniform phase (MAML: ``[0, pi]``).
        x_range: the range of the uniform inputs (MAML: ``[-5, 5]``).
        noise: standard deviation of Gaussian noise added to the targets (MAML: 0).

    Attributes:
        problem: ``"regression"``.
        in_shape: ``(1,)``, one real input per point.
        out_features: 1, one real target per point.

    Example:
        >>> SinusoidTasks()
        SinusoidTasks(amplitude=(0.1, 5.0), phase=(0.0, 3.14159), x_range=(-5.0, 5.0), noise=0.0)
    """

    problem = "regression"
    in_shape = (1,)
    out_features = 1

    def __init__(
        self,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
        noise: float = 0.0,
    ) -> None:
        self.amplitude = _check_range("amplitude", amplitude)
        self.phase = _check_range("phase", phase)
        self.x_range = _check_range("x_range", x_range)
        if isinstance(noise, bool) or not isinstance(noise, int | float) or not noise >= 0:
            raise ValueError(f"noise must be a number >= 0, got {noise!r}")
        self.noise = float(noise)

    def __repr__(self) -> str:
        return (
            f"SinusoidTasks(amplitude={self.amplitude}, phase=({self.phase[0]}, "
            f"{self.phase[1]:.6g}), x_range={self.x_range}, noise={self.noise})"
        )

    def describe(self, part: Part) -> str:
        """``"sinusoid/test (seed stream 3s+2)"``: where a part's tasks come from."""
        return f"sinusoid/{part} (seed stream 3s+{_PART_INDEX[part]})"

    def draw(
        self, tasks: int, shots: int, queries: int, generator: torch.Generator
    ) -> RegressionEpisode:
        """``tasks`` new tasks with ``shots`` support and ``queries`` query points each.

        The draws happen in a fixed order from ``generator`` (amplitudes, phases, inputs,
        then noise if any), so the same generator state gives the same tasks.
        """
        a_lo, a_hi = self.amplitude
        p_lo, p_hi = self.phase
        x_lo, x_hi = self.x_range
        amplitude = a_lo + (a_hi - a_lo) * torch.rand(tasks, generator=generator)
        phase = p_lo + (p_hi - p_lo) * torch.rand(tasks, generator=generator)
        x = x_lo + (x_hi - x_lo) * torch.rand(tasks, shots + queries, 1, generator=generator)
        y = amplitude.view(-1, 1, 1) * torch.sin(x - phase.view(-1, 1, 1))
        if self.noise > 0:
            y = y + self.noise * torch.randn(y.shape, generator=generator)
        params = torch.stack([amplitude, phase], dim=1)
        return RegressionEpisode(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:], params)

    def sampler(
        self,
        part: Part,
        ways: int | None,
        shots: int,
        queries: int,
        tasks: int,
        *,
        seed: int,
        device: torch.device | str | None = None,
    ) -> SinusoidSampler:
        """An endless, resumable stream of meta-batches of ``part``'s tasks."""
        return SinusoidSampler(self, part, ways, shots, queries, tasks, seed=seed, device=device)

    def fixed(
        self,
        part: Part,
        ways: int | None,
        shots: int,
        queries: int,
        episodes: int,
        *,
        seed: int,
        batch_size: int,
        device: torch.device | str | None = None,
    ) -> FixedSinusoids:
        """``episodes`` fixed, seeded tasks of ``part``, delivered ``batch_size`` at a time."""
        return FixedSinusoids(
            self, part, ways, shots, queries, episodes, seed=seed, batch_size=batch_size,
            device=device,
        )  # fmt: skip


def _check_shape(ways: int | None, shots: int, queries: int) -> tuple[int, int]:
    if ways is not None:
        raise ValueError(
            f"sinusoid tasks have no classes: ways must be None, got {ways!r} (shots and "
            "queries are the numbers of support and query points)"
        )
    return _check_count("shots", shots), _check_count("queries", queries)


class SinusoidSampler:
    """Meta-batches of ``tasks`` sinusoid tasks, drawn from a seeded CPU generator.

    Args:
        tasks_source: the task distribution (:class:`SinusoidTasks`).
        part: ``"train"``, ``"val"`` or ``"test"`` (selects the seed stream).
        ways: must be ``None`` (regression has no classes).
        shots: support points per task ``K``.
        queries: query points per task.
        tasks: tasks per meta-batch ``T``.
        seed: the run's seed; the generator is seeded with :func:`part_seed`.
        device: where episodes are delivered.
    """

    def __init__(
        self,
        tasks_source: SinusoidTasks,
        part: Part,
        ways: int | None,
        shots: int,
        queries: int,
        tasks: int,
        *,
        seed: int,
        device: torch.device | str | None = None,
    ) -> None:
        self.source = tasks_source
        self.part = part
        self.shots, self.queries = _check_shape(ways, shots, queries)
        self.tasks = _check_count("tasks", tasks)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.generator = torch.Generator().manual_seed(part_seed(seed, part))

    def __repr__(self) -> str:
        return (
            f"SinusoidSampler(part={self.part!r}, shots={self.shots}, queries={self.queries}, "
            f"tasks={self.tasks}, device={self.device}, source={self.source!r})"
        )

    def sample(self) -> RegressionEpisode:
        """One meta-batch: ``support_x/y [T, K, 1]``, ``query_x/y [T, Q, 1]``, ``params [T, 2]``."""
        ep = self.source.draw(self.tasks, self.shots, self.queries, self.generator)
        return ep if self.device.type == "cpu" else ep.to(self.device)

    def __iter__(self) -> Iterator[RegressionEpisode]:
        while True:
            yield self.sample()

    def state_dict(self) -> dict[str, Any]:
        """The generator state and the hyper-parameters (``weights_only``-loadable)."""
        return {"generator_state": self.generator.get_state(), "hyperparameters": self._hyper()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a state of other hyper-parameters is refused."""
        theirs = state.get("hyperparameters")
        if theirs is not None and dict(theirs) != self._hyper():
            raise ValueError(
                f"this state_dict was saved by a SinusoidSampler with {dict(theirs)}, but this "
                f"one has {self._hyper()}; build the sampler with the saved hyper-parameters."
            )
        self.generator.set_state(state["generator_state"])

    def _hyper(self) -> dict[str, Any]:
        s = self.source
        return {
            "part": self.part, "shots": self.shots, "queries": self.queries, "tasks": self.tasks,
            "amplitude": s.amplitude, "phase": s.phase, "x_range": s.x_range, "noise": s.noise,
        }  # fmt: skip


class FixedSinusoids:
    """A fixed, seeded set of sinusoid tasks, identical across runs, machines and batch sizes.

    All ``num_episodes`` tasks are drawn up front (from :func:`part_seed` of ``seed``);
    iterating yields them ``batch_size`` at a time.

    Example:
        >>> test = SinusoidTasks().fixed("test", None, 5, 10, 7, seed=0, batch_size=3)
        >>> len(test), [ep.tasks for ep in test]
        (3, [3, 3, 1])
    """

    def __init__(
        self,
        tasks_source: SinusoidTasks,
        part: Part,
        ways: int | None,
        shots: int,
        queries: int,
        num_episodes: int,
        *,
        seed: int,
        batch_size: int,
        device: torch.device | str | None = None,
    ) -> None:
        shots, queries = _check_shape(ways, shots, queries)
        self.num_episodes = _check_count("num_episodes", num_episodes)
        self.batch_size = _check_count("batch_size", batch_size)
        self.part, self.seed = part, seed
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        g = torch.Generator().manual_seed(part_seed(seed, part))
        self._all = tasks_source.draw(self.num_episodes, shots, queries, g).to(self.device)

    def __len__(self) -> int:
        """Number of batches."""
        return -(-self.num_episodes // self.batch_size)

    def __iter__(self) -> Iterator[RegressionEpisode]:
        a = self._all
        for start in range(0, self.num_episodes, self.batch_size):
            s = slice(start, start + self.batch_size)
            yield RegressionEpisode(
                a.support_x[s], a.support_y[s], a.query_x[s], a.query_y[s], a.params[s]
            )

    def __repr__(self) -> str:
        a = self._all
        return (
            f"FixedSinusoids(part={self.part!r}, shots={a.shots}, queries={a.queries}, "
            f"num_episodes={self.num_episodes}, seed={self.seed}, batch_size={self.batch_size})"
        )
