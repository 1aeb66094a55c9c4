"""Dynamic weight average: weight each task by how slowly its loss is falling.

Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention" (MTAN), CVPR 2019,
eq. 7:

    w_i(t) = K exp(r_i(t-1) / T) / sum_j exp(r_j(t-1) / T),   r_i(t-1) = L_i(t-1) / L_i(t-2)

where ``L_i(t)`` is task ``i``'s loss averaged over period ``t`` (an epoch in the paper) and
``T`` a temperature (2 in the paper); ``w_i = 1`` for the first two periods. A task whose loss
fell less (``r`` near or above 1) gets more weight. Here a period is ``period`` training steps
(set it to the steps of an epoch to follow the paper; ``1`` is per step, as some
re-implementations do). With sampled tasks, ``K`` is the number of tasks in the step and a
task's averages only count the steps it was in.

State: the running sum and count of the current period and the means of the last two
periods, per task (``{"sum", "count", "last", "before"}``, ``[K]`` each; NaN = not seen yet).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
from torch import Tensor

from manytask.mtl.base import LossWeighting, State, StepInfo
from manytask.typed import Range

__all__ = ["DWA"]


class DWA(LossWeighting):
    """Dynamic weight average (Liu et al. 2019, eq. 7).

    Args:
        temperature: ``T > 0`` (2 in the paper); large ``T`` gives equal weights.
        period: steps per averaging period (the paper's epoch).

    Example:
        >>> m = DWA(temperature=2.0, period=1)
        >>> state = m.init(2)
        >>> for step, L in enumerate([[1.0, 1.0], [0.5, 1.0], [0.25, 1.0]]):
        ...     w, state = m.weights(torch.tensor(L), state, StepInfo.all_tasks(2, step))
        >>> [round(x, 4) for x in w.tolist()]   # task 0 halved its loss, task 1 did not
        [0.8756, 1.1244]
    """

    name = "dwa"

    def __init__(
        self,
        temperature: Annotated[float, Range(min=0, open=True)] = 2.0,
        period: Annotated[int, Range(min=1)] = 1,
    ) -> None:
        t = temperature
        if (
            isinstance(t, bool)
            or not isinstance(t, int | float)
            or not (math.isfinite(t) and t > 0)
        ):
            raise ValueError(f"dwa: temperature must be a finite number > 0; got {temperature!r}")
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise ValueError(f"dwa: period must be a positive int (steps); got {period!r}")
        self.temperature = float(t)
        self.period = period

    def hyperparameters(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "period": self.period}

    def init(self, num_tasks: int) -> State:
        super().init(num_tasks)
        nan = torch.full((num_tasks,), math.nan, dtype=torch.float64)
        zero = torch.zeros(num_tasks, dtype=torch.float64)
        return {"sum": zero, "count": zero.clone(), "last": nan, "before": nan.clone()}

    def weights(self, losses: Tensor, state: State, info: StepInfo) -> tuple[Tensor, State]:
        st = {k: v.to("cpu", torch.float64).clone() for k, v in state.items()}
        if info.step > 0 and info.step % self.period == 0:
            seen = st["count"] > 0
            st["before"] = torch.where(seen, st["last"], st["before"])
            st["last"] = torch.where(seen, st["sum"] / st["count"].clamp_min(1), st["last"])
            st["sum"].zero_()
            st["count"].zero_()
        idx = info.tasks.to("cpu", torch.long)
        k = idx.shape[0]
        last, before = st["last"][idx], st["before"][idx]
        if bool(torch.isnan(last).any() or torch.isnan(before).any()):
            w = torch.ones(k, dtype=torch.float64)
        else:
            ratio = last / before.clamp_min(1e-12)
            w = k * torch.softmax(ratio / self.temperature, 0)
        st["sum"][idx] += losses.to("cpu", torch.float64)
        st["count"][idx] += 1.0
        return w.to(losses), st
