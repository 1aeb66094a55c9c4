"""Fixed task weights: the multi-task objective ``sum_i w_i L_i`` (CS330, multi-task basics).

The lecture's objective is ``min_theta sum_{i=1}^T w_i L_i(theta, D_i)`` with weights chosen
by hand (by importance or priority). The weights come from the recipe
(``method: {name: fixed, args: {weights: ...}}``), else from the task specs
(:attr:`manytask.data.TaskSpec.weight`, default 1), so ``fixed`` with no arguments is the plain
sum of the task losses.

When a run samples ``k < K`` tasks per step, the step minimises ``sum_{i in S} w_i L_i`` over the
sampled set ``S``; with uniform task sampling its expectation is ``k/K`` times the full
objective (the same minimiser; Adam is invariant to that constant, SGD sees a smaller
learning rate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from manytask.mtl.base import LossWeighting, State, StepInfo, check_weight_vector

__all__ = ["FixedWeights"]


class FixedWeights(LossWeighting):
    """``sum_i w_i L_i`` with constant weights.

    Args:
        weights: ``None`` (the task specs' weights), a list of ``K`` weights in task order, or a
            mapping ``{task name: weight}`` (tasks not named keep their spec weight). Finite,
            ``>= 0`` (0 trains a task's head on nothing), at least one ``> 0``.
        task_names: the run's task names in task-index order (filled in by the run).
        task_weights: the task specs' weights (filled in by the run; default all 1).

    Example:
        >>> m = FixedWeights({"b": 2.0}, task_names=("a", "b"))
        >>> m
        FixedWeights(weights={'b': 2.0})
        >>> state = m.init(2)
        >>> m.weights(torch.tensor([0.5, 0.7]), state, StepInfo.all_tasks(2))[0]
        tensor([1., 2.])
    """

    name = "fixed"

    def __init__(
        self,
        weights: Mapping[str, float] | Sequence[float] | None = None,
        *,
        task_names: Sequence[str] = (),
        task_weights: Sequence[float] = (),
    ) -> None:
        if weights is not None and not isinstance(weights, Mapping | Sequence):
            raise ValueError(
                f"fixed: weights must be null, a list of numbers or a mapping task -> weight; "
                f"got {weights!r}"
            )
        if isinstance(weights, str):
            raise ValueError(f"fixed: weights must be numbers, got the string {weights!r}")
        if isinstance(weights, Mapping):
            weights = {str(k): float(v) for k, v in weights.items()}
            if weights and not task_names:
                raise ValueError(
                    "fixed: weights given by task name need task_names (the run fills them in); "
                    "give a list of weights in task order instead"
                )
            unknown = [k for k in weights if k not in task_names]
            if unknown:
                raise ValueError(
                    f"fixed: weights name task {unknown[0]!r}, which this run does not have; "
                    f"its tasks are {', '.join(task_names)}"
                )
        elif weights is not None:
            weights = [float(w) for w in weights]
        self._weights = weights
        self.task_names = tuple(task_names)
        self.task_weights = tuple(float(w) for w in task_weights)
        if self.task_names and self.task_weights and len(self.task_names) != len(self.task_weights):
            raise ValueError("fixed: task_names and task_weights must have the same length")
        if isinstance(weights, list):
            check_weight_vector("fixed", weights, len(weights))

    def hyperparameters(self) -> dict[str, Any]:
        return {"weights": self._weights}

    def resolved(self, num_tasks: int) -> list[float]:
        """The weight of every task of a run of ``num_tasks`` tasks, in task-index order."""
        base = list(self.task_weights) if self.task_weights else [1.0] * num_tasks
        if len(base) != num_tasks:
            raise ValueError(f"fixed: {len(base)} task weights for a run of {num_tasks} tasks")
        if isinstance(self._weights, list):
            out = self._weights
        elif isinstance(self._weights, dict):
            out = list(base)
            for name, w in self._weights.items():
                out[self.task_names.index(name)] = w
        else:
            out = base
        return check_weight_vector("fixed", out, num_tasks)

    def init(self, num_tasks: int) -> State:
        super().init(num_tasks)
        # The weights are hyper-parameters, but keeping the resolved vector in the state puts it
        # on the model's device once (no host-to-device copy per step).
        return {"weights": torch.tensor(self.resolved(num_tasks), dtype=torch.float32)}

    def weights(self, losses: Tensor, state: State, info: StepInfo) -> tuple[Tensor, State]:
        w: Tensor = state["weights"].to(losses.device)
        return w[info.tasks.to(losses.device)], state
