"""Sampling a multi-task step: a mini-batch of tasks, then a mini-batch of data per task.

CS330's multi-task training loop: (1) sample a mini-batch of tasks ``B ~ {T_i}``; (2) sample a
mini-batch of data points for each task ``D_i^b ~ D_i``; (3) compute the loss on the
mini-batch, ``L(theta, B) = sum_{T_k in B} L_k(theta, D_k^b)``; (4) back-propagate; (5) step.

**Tasks.** :func:`task_probabilities` gives the probability ``p_i`` of drawing task ``i``
from the training-set sizes ``n_i``:

- ``uniform``: ``p_i = 1 / K``;
- ``proportional``: ``p_i = n_i / sum_j n_j`` (every *example* equally likely, as if the data
  sets were pooled);
- ``temperature``: ``p_i = n_i^(1/T) / sum_j n_j^(1/T)``; ``T = 1`` is proportional,
  ``T -> inf`` uniform (the temperature-based sampling of multilingual translation,
  Arivazhagan et al. 2019, section 4.2).

:class:`TaskSampler` draws ``k`` distinct tasks per step: successive draws without
replacement (``torch.multinomial(p, k, replacement=False)``), so the first draw follows ``p``
exactly and ``k = 1`` samples each step's task from ``p``. With ``k = K`` (or ``None``) every
task is in every step and nothing is drawn.

**Data.** :class:`EpochBatches` serves mini-batches of example indices for several streams
(one per task, or one for all tasks when they share their inputs), each in epochs: a fresh
permutation per stream and epoch, drawn from a generator seeded by ``(seed, stream, epoch)``,
so the state is two integers per stream and a resumed run sees exactly the same batches.

Randomness comes only from explicit seeds; no global RNG is read or moved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from manytask.nn.init import derived_seed

__all__ = ["EpochBatches", "Strategy", "TaskSampler", "task_probabilities"]

Strategy = Literal["uniform", "proportional", "temperature"]
_STRATEGIES: tuple[str, ...] = get_args(Strategy)


def task_probabilities(
    sizes: Sequence[int], strategy: Strategy = "uniform", temperature: float = 1.0
) -> Tensor:
    """``p_i`` of each task (float64 ``[K]``, sums to 1) from the sizes ``n_i``.

    Example:
        >>> task_probabilities([100, 400], "proportional").tolist()
        [0.2, 0.8]
        >>> [round(p, 6) for p in task_probabilities([100, 400], "temperature", 2.0).tolist()]
        [0.333333, 0.666667]
    """
    if strategy not in _STRATEGIES:
        raise ValueError(f"strategy must be one of {_STRATEGIES}; got {strategy!r}")
    n = torch.tensor([float(s) for s in sizes], dtype=torch.float64)
    if n.numel() == 0 or bool((n < 1).any()):
        raise ValueError(f"sizes must be a non-empty list of positive counts; got {list(sizes)}")
    if not (isinstance(temperature, int | float) and temperature > 0):
        raise ValueError(f"temperature must be > 0; got {temperature!r}")
    if strategy == "uniform":
        w = torch.ones_like(n)
    elif strategy == "proportional":
        w = n
    else:
        # n^(1/T) in log space: exact for large n and small T.
        w = torch.softmax(torch.log(n) / float(temperature), 0)
    return w / w.sum()


class TaskSampler:
    """Draws the tasks of each step (``k`` distinct tasks with probabilities ``p``).

    Args:
        sizes: training examples per task ``n_i`` (``K`` entries).
        tasks_per_step: ``k`` (``None`` or ``>= K``: every task, in index order, every step).
        strategy: ``"uniform"``, ``"proportional"`` or ``"temperature"``.
        temperature: ``T`` of the temperature strategy.
        seed: the seed of the sampler's own generator.

    Example:
        >>> s = TaskSampler([10, 20, 30], tasks_per_step=2, seed=0)
        >>> s.sample().tolist()
        [1, 2]
        >>> TaskSampler([10, 20, 30]).sample().tolist()
        [0, 1, 2]
    """

    def __init__(
        self,
        sizes: Sequence[int],
        tasks_per_step: int | None = None,
        strategy: Strategy = "uniform",
        temperature: float = 1.0,
        *,
        seed: int = 0,
    ) -> None:
        self.sizes = tuple(int(s) for s in sizes)
        self.probabilities = task_probabilities(self.sizes, strategy, temperature)
        k = len(self.sizes)
        if tasks_per_step is not None and (
            isinstance(tasks_per_step, bool)
            or not isinstance(tasks_per_step, int)
            or tasks_per_step < 1
        ):
            raise ValueError(
                f"tasks_per_step must be a positive int or None; got {tasks_per_step!r}"
            )
        self.tasks_per_step = k if tasks_per_step is None else min(tasks_per_step, k)
        self.strategy = strategy
        self.temperature = float(temperature)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    @property
    def num_tasks(self) -> int:
        return len(self.sizes)

    def __repr__(self) -> str:
        return (
            f"TaskSampler(tasks={self.num_tasks}, tasks_per_step={self.tasks_per_step}, "
            f"strategy={self.strategy!r}, temperature={self.temperature}, seed={self.seed})"
        )

    def sample(self) -> Tensor:
        """``[k]`` int64 task indices of one step, sorted."""
        if self.tasks_per_step == self.num_tasks:
            return torch.arange(self.num_tasks)
        drawn = torch.multinomial(
            self.probabilities, self.tasks_per_step, replacement=False, generator=self.generator
        )
        return drawn.sort().values

    def _hparams(self) -> dict[str, Any]:
        return {
            "sizes": list(self.sizes),
            "tasks_per_step": self.tasks_per_step,
            "strategy": self.strategy,
            "temperature": self.temperature,
            "seed": self.seed,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"generator_state": self.generator.get_state(), **self._hparams()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = {k: state.get(k) for k in self._hparams()}
        if saved != self._hparams():
            raise ValueError(
                f"this task-sampler state was saved with {saved}, not {self._hparams()}; resume "
                "with the run's own config"
            )
        self.generator.set_state(state["generator_state"])


class EpochBatches:
    """Mini-batches of example indices for several streams, one seeded permutation per epoch.

    Args:
        sizes: examples per stream (one stream per task, or one for tasks sharing inputs).
        batch_size: indices per batch (a stream smaller than that gives all of its examples).
        seed: seeds every stream's permutations.

    A batch never spans two epochs: the last ``n mod batch_size`` examples of a permutation
    are dropped and the next epoch starts (each epoch has a new permutation, so no example is
    dropped for good).

    Example:
        >>> b = EpochBatches([5], batch_size=2, seed=0)
        >>> [b.next(0).tolist() for _ in range(3)]
        [[3, 2], [4, 1], [0, 2]]
    """

    def __init__(self, sizes: Sequence[int], batch_size: int, *, seed: int = 0) -> None:
        self.sizes = tuple(int(n) for n in sizes)
        if not self.sizes or any(n < 1 for n in self.sizes):
            raise ValueError(
                f"every stream needs at least one example; sizes are {list(self.sizes)}. A task "
                "with no training data cannot be trained: drop it with the recipe's tasks key."
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
        self.batch_size = batch_size
        self.seed = int(seed)
        self.epoch = [0] * len(self.sizes)
        self.position = [0] * len(self.sizes)
        self._perm: dict[int, Tensor] = {}

    def __repr__(self) -> str:
        return f"EpochBatches(streams={len(self.sizes)}, batch_size={self.batch_size})"

    def _permutation(self, stream: int) -> Tensor:
        perm = self._perm.get(stream)
        if perm is None:
            g = torch.Generator().manual_seed(derived_seed(self.seed, stream, self.epoch[stream]))
            perm = torch.randperm(self.sizes[stream], generator=g)
            self._perm[stream] = perm
        return perm

    def next(self, stream: int) -> Tensor:
        """The next batch of indices ``[min(batch_size, n)]`` of ``stream``."""
        n = self.sizes[stream]
        size = min(self.batch_size, n)
        if self.position[stream] + size > n:
            self.epoch[stream] += 1
            self.position[stream] = 0
            self._perm.pop(stream, None)
        start = self.position[stream]
        self.position[stream] = start + size
        return self._permutation(stream)[start : start + size]

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": list(self.epoch),
            "position": list(self.position),
            "sizes": list(self.sizes),
            "batch_size": self.batch_size,
            "seed": self.seed,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        mine = (list(self.sizes), self.batch_size, self.seed)
        if (list(state["sizes"]), state["batch_size"], state["seed"]) != mine:
            raise ValueError(
                "this batch-sampler state was saved for other data or batch sizes; resume with "
                "the run's own config"
            )
        self.epoch = [int(e) for e in state["epoch"]]
        self.position = [int(p) for p in state["position"]]
        self._perm = {}
