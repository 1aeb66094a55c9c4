"""Cross-stitch networks (Misra, Shrivastava, Gupta & Hebert, CVPR 2016).

One network (column) per task; after chosen layers a cross-stitch unit replaces each
column's activation by a learned linear combination of all columns' activations at the same
position (eq. 1, written for two tasks A and B):
``[x~_A ; x~_B] = [[a_AA, a_AB], [a_BA, a_BB]] [x_A ; x_B]``; for ``K`` tasks
``x~_i = sum_j a_ij x_j``. ``granularity="layer"`` learns one ``a_ij`` per pair of columns and
layer (the paper's unit); ``"channel"`` one per channel. The paper initialises each row as a
convex combination, ``(a_S, a_D) = (0.9, 0.1)`` for two tasks; we put ``alpha_self`` on the
diagonal and ``(1 - alpha_self) / (K - 1)`` elsewhere. With ``alpha_self = 1`` the units are
the identity and the model is ``K`` independent networks. (The paper also scales the learning
rate of the ``a`` by 10^2-10^3; give :meth:`CrossStitch.stitch_parameters` its own optimiser
parameter group to do that.)

Parameter split by reach: every column up to the last unit is reached by every task's loss
through the units (it is *soft* sharing), so it is in ``theta_sh`` with the units; column
``i``'s stages after the last unit, row ``i`` of the last unit and head ``i`` are ``theta_i``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast, get_args

import torch
from torch import Tensor, nn

from manytask.nn.backbones import BackboneFactory, Trunk
from manytask.nn.conditioning.base import (
    MultiTaskModel,
    Request,
    TaskHeads,
    check_hidden,
    check_positions,
)

__all__ = ["CrossStitch", "CrossStitchUnit"]

Granularity = Literal["layer", "channel"]
_GRANULARITIES: tuple[str, ...] = get_args(Granularity)


class CrossStitchUnit(nn.Module):
    """``x~_i = sum_j a_ij x_j`` over ``K`` columns; row ``a_i`` is its own parameter.

    Args:
        num_tasks: number of columns ``K``.
        channels: channels ``C`` of the stitched activations (used by ``"channel"``).
        granularity: ``"layer"`` (``a`` is ``[K, K]``) or ``"channel"`` (``[K, K, C]``).
        alpha_self: initial diagonal; off-diagonal entries start at
            ``(1 - alpha_self) / (K - 1)`` so every row sums to one.

    Example:
        >>> import torch
        >>> unit = CrossStitchUnit(2, 4, alpha_self=1.0)
        >>> h = torch.randn(2, 3, 4)  # [K, B, C]
        >>> torch.equal(unit(h), h)
        True
    """

    def __init__(
        self,
        num_tasks: int,
        channels: int,
        granularity: Granularity = "layer",
        alpha_self: float = 0.9,
    ) -> None:
        super().__init__()
        if granularity not in _GRANULARITIES:
            raise ValueError(
                f"CrossStitchUnit: granularity must be one of {_GRANULARITIES}; got {granularity!r}"
            )
        if not 0.0 <= float(alpha_self) <= 1.0:
            raise ValueError(f"CrossStitchUnit: alpha_self must be in [0, 1]; got {alpha_self!r}")
        self.num_tasks = num_tasks
        self.channels = channels
        self.granularity: Granularity = granularity
        self.alpha_self = float(alpha_self)
        shape = (num_tasks,) if granularity == "layer" else (num_tasks, channels)
        for i in range(num_tasks):
            self.register_parameter(f"row{i}", nn.Parameter(torch.empty(shape)))
        self.reset_parameters()

    def row(self, i: int) -> nn.Parameter:
        """Row ``a_i`` (how column ``i`` mixes the columns)."""
        return cast(nn.Parameter, getattr(self, f"row{i}"))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Deterministic: ``alpha_self`` on the diagonal, the rest of each row equal."""
        k = self.num_tasks
        other = (1.0 - self.alpha_self) / (k - 1) if k > 1 else 0.0
        with torch.no_grad():
            for i in range(k):
                r = self.row(i)
                r.fill_(other)
                r[i] = self.alpha_self if k > 1 else 1.0

    def matrix(self) -> Tensor:
        """``a``: ``[K, K]`` or ``[K, K, C]``."""
        return torch.stack([self.row(i) for i in range(self.num_tasks)])

    def forward(self, h: Tensor) -> Tensor:
        """``[K, B, C, ...] -> [K, B, C, ...]``."""
        a = self.matrix()
        if self.granularity == "layer":
            return torch.einsum("ij,j...->i...", a, h)
        return torch.einsum("ijc,jbc...->ibc...", a, h)

    def extra_repr(self) -> str:
        return (
            f"num_tasks={self.num_tasks}, channels={self.channels}, "
            f"granularity={self.granularity!r}, alpha_self={self.alpha_self}"
        )


class CrossStitch(MultiTaskModel):
    """One column per task, mixed by cross-stitch units after chosen stages.

    Args:
        backbone: a factory building the backbone (called once per task).
        input_shape: per-example input shape.
        num_outputs: output size of every task.
        at: stages after which a unit stitches the columns (``1..L``); default every stage.
        granularity: ``"layer"`` or ``"channel"`` (see :class:`CrossStitchUnit`).
        alpha_self: initial diagonal of every unit (``1.0`` = independent networks).
        head_hidden: hidden widths of each task's head tower.

    Example:
        >>> from functools import partial
        >>> from manytask.nn.backbones import MLP
        >>> model = CrossStitch(partial(MLP, 6, hidden=(16, 16)), (6,), (3, 2))
        >>> model(torch.zeros(4, 6), 1).shape
        torch.Size([4, 2])
        >>> model.parameter_counts()  # the columns are shared through the units
        {'shared': 772, 'per_task': [53, 36]}
    """

    shares_input_pass = True

    def __init__(
        self,
        backbone: BackboneFactory,
        input_shape: Sequence[int],
        num_outputs: Sequence[int],
        *,
        at: Sequence[int] | None = None,
        granularity: Granularity = "layer",
        alpha_self: float = 0.9,
        head_hidden: Sequence[int] = (),
    ) -> None:
        super().__init__(input_shape, num_outputs)
        name = type(self).__name__
        self.head_hidden = check_hidden(name, "head_hidden", head_hidden)
        self.columns = nn.ModuleList(Trunk(backbone(), input_shape) for _ in range(self.num_tasks))
        first = self.column(0)
        self.at = check_positions(name, "at", at, first.depth, lowest=1)
        self.units = nn.ModuleDict(
            {
                str(p): CrossStitchUnit(self.num_tasks, first.channels(p), granularity, alpha_self)
                for p in self.at
            }
        )
        self.granularity: Granularity = granularity
        self.alpha_self = float(alpha_self)
        self.heads = TaskHeads(first.out_features, self.num_outputs, "per_task", head_hidden)
        self._check_split()

    def column(self, task: int) -> Trunk:
        """Task ``task``'s column (a copy of the backbone)."""
        return cast(Trunk, self.columns[task])

    def unit(self, position: int) -> CrossStitchUnit:
        """The cross-stitch unit after stage ``position``."""
        return cast(CrossStitchUnit, self.units[str(position)])

    @property
    def last_stitch(self) -> int:
        """The position of the last unit; later stages are task-specific."""
        return self.at[-1]

    def stitch_parameters(self) -> list[nn.Parameter]:
        """The ``a`` of every unit (the paper trains them with a larger learning rate)."""
        return [p for unit in self.units.values() for p in unit.parameters()]

    def _forward_requests(self, x: Tensor, requests: Sequence[Request]) -> list[Tensor]:
        hs = [x] * self.num_tasks
        for position in range(1, self.last_stitch + 1):
            hs = [self.column(k).stages[position - 1](h) for k, h in enumerate(hs)]
            if position in self.at:
                hs = list(self.unit(position)(torch.stack(hs)).unbind(0))
        outs = []
        for t, s, e in requests:
            h = hs[t][s:e]
            for stage in self.column(t).stages[self.last_stitch :]:
                h = stage(h)
            outs.append(self.heads(torch.flatten(h, 1), t))
        return outs

    def _task_parameter_list(self, task: int) -> list[nn.Parameter]:
        suffix = [
            p for stage in self.column(task).stages[self.last_stitch :] for p in stage.parameters()
        ]
        return [
            *suffix,
            self.unit(self.last_stitch).row(task),
            *self.heads.task_parameters(task),
        ]

    def extra_repr(self) -> str:
        return (
            f"input_shape={self.input_shape}, num_outputs={self.num_outputs}, at={self.at}, "
            f"granularity={self.granularity!r}, alpha_self={self.alpha_self}, "
            f"head_hidden={self.head_hidden}"
        )
