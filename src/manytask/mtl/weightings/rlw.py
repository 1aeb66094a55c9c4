"""Random loss weighting: fresh random weights at every step.

Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task
Learning", TMLR 2022, eq. 4: ``w = softmax(w_tilde)`` with ``w_tilde`` drawn from a
distribution at every step; the paper's default is the standard normal. It is a litmus test:
a method that does not beat random weights has not shown it balances tasks. Its weights sum to
1. ``"dirichlet"`` draws ``w ~ Dirichlet(1, ..., 1)`` (uniform on the simplex) instead.

Randomness comes from a ``torch.Generator`` seeded with ``seed`` whose state is the method
state, so a resumed run draws the same weights.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from torch import Tensor

from manytask.mtl.base import LossWeighting, State, StepInfo

__all__ = ["RLW"]

Distribution = Literal["normal", "dirichlet"]
_DISTRIBUTIONS: tuple[str, ...] = get_args(Distribution)


class RLW(LossWeighting):
    """Random loss weighting (Lin et al. 2022).

    Args:
        distribution: ``"normal"`` (softmax of standard normal draws; the paper's default) or
            ``"dirichlet"``.
        seed: seed of the method's generator.

    Example:
        >>> m = RLW(seed=0)
        >>> w, state = m.weights(torch.zeros(3), m.init(3), StepInfo.all_tasks(3))
        >>> round(float(w.sum()), 6), bool((w > 0).all())
        (1.0, True)
    """

    name = "rlw"

    def __init__(self, distribution: Distribution = "normal", seed: int = 0) -> None:
        if distribution not in _DISTRIBUTIONS:
            raise ValueError(
                f"rlw: distribution must be one of {_DISTRIBUTIONS}; got {distribution!r}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"rlw: seed must be an int; got {seed!r}")
        self.distribution = distribution
        self.seed = seed

    def hyperparameters(self) -> dict[str, Any]:
        return {"distribution": self.distribution, "seed": self.seed}

    def init(self, num_tasks: int) -> State:
        super().init(num_tasks)
        return {"rng": torch.Generator().manual_seed(self.seed).get_state()}

    def weights(self, losses: Tensor, state: State, info: StepInfo) -> tuple[Tensor, State]:
        g = torch.Generator()
        g.set_state(state["rng"].cpu())
        k = losses.shape[0]
        if self.distribution == "normal":
            w = torch.softmax(torch.randn(k, generator=g, dtype=torch.float64), 0)
        else:
            e = -torch.log1p(-torch.rand(k, generator=g, dtype=torch.float64))  # Exp(1)
            w = e / e.sum()
        return w.to(losses), {**state, "rng": g.get_state()}
