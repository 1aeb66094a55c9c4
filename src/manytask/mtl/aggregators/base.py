"""The aggregator contract: a Jacobian ``[K, P]`` of K task gradients -> one direction ``[P]``.

An aggregator is pure tensor maths: no autograd, no ``.grad``, no model. Computing the
per-task gradients (:mod:`manytask.mtl.jacobian`), aggregating them (here) and writing the
direction into ``.grad`` (:mod:`manytask.mtl.gradient_methods`) are three separate steps.

Two call styles:

- ``aggregator(J, generator=g) -> d``: a one-off call (memory starts fresh each call);
- ``state = aggregator.init(K)`` then ``d, state = aggregator.update(J, state, tasks=...,
  generator=g)`` at every step: methods with memory (GradVac's similarity targets, Nash-MTL's
  previous solution) keep it in ``state``, a dict of tensors that a checkpoint stores.

Randomised aggregators (PCGrad's task order, GradDrop's thresholds) draw only from the
``torch.Generator`` they are given and refuse to run without one; nothing touches the global
RNG. ``tasks`` (``[k]`` int) says which of the run's ``K`` tasks the ``k`` rows are, when a step
samples tasks; per-task state is indexed by it.

Most methods here produce a direction in the span of the rows, ``d = J^T w``, with weights
``w [K]`` that depend on the Gramian ``G = J J^T`` only (:class:`GramianAggregator`). They
can be told a Gramian directly (:meth:`GramianAggregator.weights`), which is how MGDA-UB
applies MGDA's weights to the Jacobian of the shared *representation* and how the run avoids
materialising anything but ``[K, K]`` for the solver.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

__all__ = ["Aggregator", "GramianAggregator", "State", "check_jacobian", "gramian"]

State = dict[str, Any]


def check_jacobian(jacobian: object, owner: str) -> Tensor:
    """Raise a clear error unless ``jacobian`` is a finite float ``[K, P]`` tensor, ``K >= 1``."""
    if not isinstance(jacobian, Tensor) or jacobian.dim() != 2 or not jacobian.is_floating_point():
        found = (
            f"{jacobian.dtype} {tuple(jacobian.shape)}"
            if isinstance(jacobian, Tensor)
            else type(jacobian).__name__
        )
        raise ValueError(
            f"{owner}: the Jacobian must be a float tensor [K, P] (one row per task gradient); "
            f"got {found}. Stack flattened task gradients with torch.stack([g.flatten() ...])"
        )
    if jacobian.shape[0] == 0:
        raise ValueError(f"{owner}: the Jacobian has no rows; give at least one task gradient")
    if not bool(torch.isfinite(jacobian).all()):
        bad = int((~torch.isfinite(jacobian)).sum())
        raise ValueError(
            f"{owner}: the Jacobian has {bad} NaN/inf entries; a task's loss or gradient "
            "diverged (lower the learning rate or check the data)"
        )
    return jacobian


def gramian(jacobian: Tensor) -> Tensor:
    """``G = J J^T`` ``[K, K]`` in float64 (the solvers' precision), symmetrised."""
    g = (jacobian @ jacobian.T).to(torch.float64)
    return 0.5 * (g + g.T)


def check_number(
    owner: str,
    name: str,
    value: object,
    *,
    low: float,
    high: float = float("inf"),
    low_open: bool = False,
) -> float:
    """Validate a real hyper-parameter in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{owner}: {name} must be a number; got {value!r}")
    v = float(value)
    ok = (v > low if low_open else v >= low) and v <= high
    if not ok or v != v:
        bracket = "(" if low_open else "["
        raise ValueError(f"{owner}: {name} must be in {bracket}{low}, {high}]; got {value!r}")
    return v


def check_generator(owner: str, generator: object, needed: bool) -> torch.Generator | None:
    """A randomised aggregator needs a ``torch.Generator``; say how to give one."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"{owner}: generator must be a torch.Generator; got {generator!r}")
    if needed and generator is None:
        raise ValueError(
            f"{owner} is randomised: pass generator=torch.Generator().manual_seed(SEED) "
            "(the global RNG is never used)"
        )
    return generator


class Aggregator:
    """Base class: ``Tensor[K, P] -> Tensor[P]``, with optional explicit state.

    Subclasses implement :meth:`_update` (and :meth:`init` if they have memory), take typed
    hyper-parameters in ``__init__`` and list them in :meth:`hyperparameters` (``repr``
    shows them).
    """

    #: draws random numbers (needs a generator)
    stochastic: ClassVar[bool] = False
    #: keeps memory between steps in its state
    stateful: ClassVar[bool] = False

    def __call__(self, jacobian: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """The direction ``[P]`` for ``jacobian`` ``[K, P]`` (fresh state)."""
        name = type(self).__name__
        j = check_jacobian(jacobian, name)
        check_generator(name, generator, self.stochastic)
        k = j.shape[0]
        d, _ = self._update(j, self.init(k), torch.arange(k), generator)
        return d

    def init(self, num_tasks: int) -> State:
        """The state before the first step of a run of ``num_tasks`` tasks."""
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(
                f"{type(self).__name__}: num_tasks must be a positive int; got {num_tasks!r}"
            )
        return {}

    def update(
        self,
        jacobian: Tensor,
        state: State,
        *,
        tasks: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, State]:
        """One step: the direction ``[P]`` and the new state.

        Args:
            jacobian: ``[k, P]``, row ``j`` the gradient of the loss of task ``tasks[j]``.
            state: from :meth:`init` or the previous :meth:`update`.
            tasks: ``[k]`` the run's task index of each row (default ``0..k-1``).
            generator: the random source of a randomised aggregator.
        """
        name = type(self).__name__
        j = check_jacobian(jacobian, name)
        check_generator(name, generator, self.stochastic)
        tasks = _check_tasks(name, tasks, j.shape[0])
        return self._update(j, state, tasks, generator)

    def _update(
        self, jacobian: Tensor, state: State, tasks: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, State]:
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments that define the aggregator."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


def _check_tasks(owner: str, tasks: Tensor | None, k: int) -> Tensor:
    if tasks is None:
        return torch.arange(k)
    if not isinstance(tasks, Tensor) or tasks.dim() != 1 or tasks.shape[0] != k:
        raise ValueError(
            f"{owner}: tasks must be a [k] int tensor with k = {k} rows of the Jacobian; "
            f"got {tasks!r}"
        )
    return tasks.to("cpu", torch.long)


class GramianAggregator(Aggregator):
    """An aggregator whose direction is ``J^T w`` with ``w [K]`` a function of ``G = J J^T``.

    Subclasses implement :meth:`_weights` (float64 Gramian in, float64 weights out).
    """

    def weights(
        self,
        gramian: Tensor,
        state: State | None = None,
        *,
        tasks: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, State]:
        """The weights ``w [K]`` for a Gramian ``[K, K]`` (and the new state).

        ``J^T w`` is the direction; with the Gramian of another Jacobian (the shared
        representation's, MGDA-UB) the weights are applied to the losses instead.
        """
        name = type(self).__name__
        if (
            not isinstance(gramian, Tensor)
            or gramian.dim() != 2
            or gramian.shape[0] != gramian.shape[1]
            or gramian.shape[0] == 0
        ):
            found = tuple(gramian.shape) if isinstance(gramian, Tensor) else gramian
            raise ValueError(f"{name}: the Gramian must be a square [K, K] tensor; got {found}")
        if not bool(torch.isfinite(gramian).all()):
            raise ValueError(f"{name}: the Gramian has NaN/inf entries")
        check_generator(name, generator, self.stochastic)
        k = gramian.shape[0]
        tasks = _check_tasks(name, tasks, k)
        g = gramian.detach().to("cpu", torch.float64)
        g = 0.5 * (g + g.T)
        if state is None:
            state = self.init(k)
        w, state = self._weights(g, state, tasks, generator)
        return w.to(device=gramian.device, dtype=gramian.dtype), state

    def _weights(
        self, gramian: Tensor, state: State, tasks: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, State]:
        raise NotImplementedError

    def _update(
        self, jacobian: Tensor, state: State, tasks: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, State]:
        g = gramian(jacobian).cpu()
        w, state = self._weights(g, state, tasks, generator)
        return w.to(jacobian) @ jacobian, state
