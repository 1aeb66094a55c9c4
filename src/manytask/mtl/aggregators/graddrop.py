"""GradDrop: keep, per coordinate, only the gradients of one randomly chosen sign.

Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout",
NeurIPS 2020, Algorithm 1 (lines 10-15). For every coordinate ``p`` of the gradients, the
*positive sign purity* is

    P_p = 1/2 (1 + sum_i g_ip / sum_i |g_ip|)          (eq. 1; P = 1/2 where every g_ip = 0)

then ``U_p ~ Uniform(0, 1)`` and task ``i`` keeps its component where
``M_ip = [P_p > U_p][g_ip > 0] + [P_p < U_p][g_ip < 0]``; with a leak ``l_i in [0, 1]`` the update
is ``d_p = sum_i (l_i + (1 - l_i) M_ip) g_ip``. Coordinates where the tasks agree in sign pass
through unchanged; where they disagree, one sign survives with probability ``P_p``.

The paper inserts GradDrop at a layer's activations; here (as torchjd does) it acts on the rows
of the Jacobian, coordinate by coordinate. ``U`` comes from the ``torch.Generator`` passed in.
Not a Gramian method: it works on every coordinate of ``J``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from manytask.mtl.aggregators.base import Aggregator, State

__all__ = ["GradDrop"]


class GradDrop(Aggregator):
    """Gradient sign dropout (Chen et al. 2020); randomised.

    Args:
        leak: ``None`` (no leak) or one value in ``[0, 1]`` per task (the fraction of its
            gradient that always passes; ``1`` turns GradDrop off for that task).

    Example:
        >>> J = torch.tensor([[1.0, 2.0], [3.0, -2.0]])
        >>> d = GradDrop()(J, generator=torch.Generator().manual_seed(0))
        >>> d[0].item(), d[1].item() in (2.0, -2.0)   # agreeing signs pass; one sign survives
        (4.0, True)
    """

    stochastic = True

    def __init__(self, leak: Sequence[float] | None = None) -> None:
        if leak is not None:
            if isinstance(leak, str) or not isinstance(leak, Sequence):
                raise ValueError(f"GradDrop: leak must be null or a list of numbers; got {leak!r}")
            values = [float(v) for v in leak]
            if not values or any(not 0.0 <= v <= 1.0 for v in values):
                raise ValueError(f"GradDrop: every leak must be in [0, 1]; got {list(leak)}")
            leak = values
        self.leak = leak

    def hyperparameters(self) -> dict[str, object]:
        return {"leak": self.leak}

    def _update(self, jacobian: Tensor, state: State, tasks: Tensor, generator: object):
        assert isinstance(generator, torch.Generator)
        total = jacobian.sum(0)
        mass = jacobian.abs().sum(0)
        purity = 0.5 * (1.0 + torch.where(mass > 0, total / mass.clamp_min(1e-38), 0.0))
        u = torch.rand(purity.shape, generator=generator, dtype=purity.dtype, device="cpu")
        u = u.to(purity.device)
        keep = ((purity > u) & (jacobian > 0)) | ((purity < u) & (jacobian < 0))
        if self.leak is None:
            return (keep.to(jacobian.dtype) * jacobian).sum(0), state
        # The run's task index picks each row's leak when the step samples tasks.
        if int(tasks.max()) >= len(self.leak):
            raise ValueError(
                f"GradDrop: {len(self.leak)} leak values but task {int(tasks.max())} in the "
                "step; give one leak per task of the run"
            )
        leak = torch.tensor(self.leak, dtype=jacobian.dtype)[tasks].to(jacobian.device)
        factor = leak[:, None] + (1.0 - leak[:, None]) * keep.to(jacobian.dtype)
        return (factor * jacobian).sum(0), state
