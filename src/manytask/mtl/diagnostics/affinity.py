"""Task affinity (TAG) and the grouping of tasks into networks that train together.

Fifty et al., "Efficiently Identifying Task Groupings for Multi-Task Learning", NeurIPS 2021.
The *lookahead* affinity of task ``i`` onto task ``j`` at step ``t`` (eq. 1-2) is

    Z_{i->j} = 1 - L_j(theta_sh - eta grad_sh L_i, theta_j) / L_j(theta_sh, theta_j)

the relative drop of task ``j``'s loss (same batch) after a step on the shared parameters
along task ``i``'s gradient alone: positive when ``i``'s update helps ``j``, negative when it
hurts. Averaged over training it ranks which tasks should share a network.

:func:`lookahead_affinity` computes ``Z`` for one step from the Jacobian the gradient methods
already have (``K`` extra forward passes, no backward); :class:`TaskAffinity` keeps the running
mean as explicit state; :func:`group_tasks` picks the grouping. :class:`AffinityProbe` does all
three inside a training run (``manytask run ... diagnostics.affinity_every=N``): every ``N``-th
step it takes the step's Jacobian (one more backward where the one-backward path applies, see
:class:`~manytask.mtl.jacobian.TaskCapture`) and ``K + 1`` forward passes of the step's batch,
without changing the model, its buffers, the gradients or the random stream of training.

**Grouping.** A grouping splits the tasks into at most ``max_groups`` groups, one network each.
As in the paper (Section 3.2), a task ``j`` in group ``S`` is predicted to gain the mean
affinity onto it from the other members, ``(1/(|S|-1)) sum_{i in S, i != j} Z_{i->j}`` (0 alone);
the grouping's score is the sum over tasks. The paper solves the selection with branch and
bound over possibly overlapping groups; here groups are disjoint and the search is exact over
every partition for ``K <= 10`` (115,975 partitions at ``K = 10``), greedy (merge the pair of
groups that raises the score most) beyond. The *measured* result of a grouping needs its
networks trained; the predicted score is what this module gives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from manytask.nn.init import global_rng_untouched

__all__ = [
    "AffinityProbe",
    "Grouping",
    "TaskAffinity",
    "affinity_heatmap",
    "group_tasks",
    "grouping_score",
    "lookahead_affinity",
]


@torch.no_grad()
def lookahead_affinity(
    losses_at: Callable[[list[Tensor]], Tensor],
    params: Sequence[Tensor],
    jacobian: Tensor,
    lr: float,
    losses: Tensor | None = None,
) -> Tensor:
    """``Z [K, K]``, ``Z[i, j] = 1 - L_j(theta - lr g_i) / L_j(theta)`` for one batch.

    Args:
        losses_at: ``f(shared_params) -> [K]`` losses of the batch with the shared parameters
            replaced (e.g. through ``torch.func.functional_call``); called ``K`` (+1) times.
        params: the shared parameters ``theta`` (the columns of ``jacobian``, in order).
        jacobian: ``[K, P]`` per-task gradients at ``theta``.
        lr: the lookahead step ``eta`` (the run's learning rate).
        losses: ``[K]`` losses at ``theta`` (computed when not given).

    Example:
        >>> # two tasks on one shared scalar w: L_0 = (w - 1)^2, L_1 = (w + 1)^2, at w = 0
        >>> f = lambda ps: torch.stack([(ps[0] - 1) ** 2, (ps[0] + 1) ** 2]).flatten()
        >>> w = torch.zeros(1)
        >>> J = torch.tensor([[-2.0], [2.0]])
        >>> lookahead_affinity(f, [w], J, lr=0.1)   # each task's step hurts the other
        tensor([[ 0.3600, -0.4400],
                [-0.4400,  0.3600]])
    """
    base = (losses if losses is not None else losses_at(list(params))).detach().flatten()
    k = jacobian.shape[0]
    out = torch.zeros(k, k, dtype=torch.float32)
    for i in range(k):
        moved, start = [], 0
        for p in params:
            n = p.numel()
            moved.append(p - lr * jacobian[i, start : start + n].view_as(p).to(p))
            start += n
        after = losses_at(moved).detach().flatten()
        out[i] = (1.0 - after / base.clamp_min(1e-12)).float().cpu()
    return out


class TaskAffinity:
    """The running mean of lookahead affinities, with explicit state (indexed by run task).

    Example:
        >>> acc = TaskAffinity()
        >>> state = acc.init(2)
        >>> state = acc.update(torch.tensor([[0.1, 0.3], [-0.2, 0.1]]), state)
        >>> acc.mean(state)
        tensor([[ 0.1000,  0.3000],
                [-0.2000,  0.1000]])
    """

    def init(self, num_tasks: int) -> dict[str, Tensor]:
        z = torch.zeros(num_tasks, num_tasks, dtype=torch.float64)
        return {"sum": z, "count": z.clone()}

    def update(
        self, affinity: Tensor, state: dict[str, Tensor], tasks: Tensor | None = None
    ) -> dict[str, Tensor]:
        k = affinity.shape[0]
        tasks = torch.arange(k) if tasks is None else tasks.to("cpu", torch.long)
        idx = (tasks.unsqueeze(1), tasks.unsqueeze(0))
        s, c = state["sum"].clone(), state["count"].clone()
        s[idx] += affinity.to(torch.float64).cpu()
        c[idx] += 1.0
        return {"sum": s, "count": c}

    def mean(self, state: dict[str, Tensor]) -> Tensor:
        c = state["count"]
        return torch.where(c > 0, state["sum"] / c.clamp_min(1), torch.zeros_like(c)).float()


@dataclass(frozen=True)
class Grouping:
    """Groups of task indices and their predicted total affinity (the score)."""

    groups: tuple[tuple[int, ...], ...]
    score: float

    def named(self, names: Sequence[str]) -> list[list[str]]:
        return [[names[i] for i in g] for g in self.groups]


def grouping_score(affinity: Tensor, groups: Sequence[Sequence[int]]) -> float:
    """Sum over tasks of the mean affinity onto each task from the rest of its group.

    Example:
        >>> Z = torch.tensor([[0.0, 0.2, -0.5], [0.4, 0.0, -0.1], [-0.3, 0.1, 0.0]])
        >>> round(grouping_score(Z, [[0, 1], [2]]), 3)   # 0.4 onto 0, 0.2 onto 1, 0 onto 2
        0.6
    """
    return _score(affinity.to(torch.float64).tolist(), groups)


def _score(z: list[list[float]], groups: Sequence[Sequence[int]]) -> float:
    total = 0.0
    for g in groups:
        if len(g) < 2:
            continue
        inner = sum(z[i][j] for i in g for j in g if i != j)
        total += inner / (len(g) - 1)
    return total


def _partitions(items: list[int], max_groups: int) -> Iterator[list[list[int]]]:
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _partitions(rest, max_groups):
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1 :]]
        if len(part) < max_groups:
            yield [[first], *part]


def _greedy(affinity: Tensor, limit: int) -> list[list[int]]:
    """Greedy merging: from singletons, merge the pair of groups that raises the score most,
    while that raises it or there are more than ``limit`` groups (``O(K^3)`` in all: a group's
    score is its inner affinity sum over ``|S| - 1``, and a merge adds the cross sums)."""
    z = affinity.to(torch.float64).tolist()
    k = len(z)
    groups = [[i] for i in range(k)]
    inner = [0.0] * k  # sum of Z[i][j], i != j, both in the group
    cross = [[z[a][b] + z[b][a] for b in range(k)] for a in range(k)]

    def score(total: float, size: int) -> float:
        return total / (size - 1) if size > 1 else 0.0

    while len(groups) > 1:
        best: tuple[float, int, int] | None = None
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                na, nb = len(groups[a]), len(groups[b])
                merged = score(inner[a] + inner[b] + cross[a][b], na + nb)
                gain = merged - score(inner[a], na) - score(inner[b], nb)
                if best is None or gain > best[0]:
                    best = (gain, a, b)
        assert best is not None
        gain, a, b = best
        if gain <= 0 and len(groups) <= limit:
            break
        groups[a] = groups[a] + groups[b]
        inner[a] += inner[b] + cross[a][b]
        for c in range(len(groups)):
            cross[a][c] += cross[b][c]
            cross[c][a] = cross[a][c]
        del groups[b], inner[b], cross[b]
        for row in cross:
            del row[b]
    return groups


def group_tasks(affinity: Tensor, max_groups: int | None = None) -> Grouping:
    """The grouping of the ``K`` tasks into at most ``max_groups`` networks with the best score.

    Exact over all partitions for ``K <= 10``; greedy merging beyond.

    Example:
        >>> Z = torch.tensor([[0.0, 0.3, -0.2], [0.3, 0.0, -0.1], [-0.4, -0.2, 0.0]])
        >>> group_tasks(Z).groups
        ((0, 1), (2,))
        >>> group_tasks(Z, max_groups=1).groups
        ((0, 1, 2),)
    """
    k = affinity.shape[0]
    if affinity.shape != (k, k) or k == 0:
        raise ValueError(f"affinity must be a square [K, K] tensor; got {tuple(affinity.shape)}")
    limit = k if max_groups is None else max_groups
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"max_groups must be a positive int; got {max_groups!r}")
    if k <= 10:
        z = affinity.to(torch.float64).tolist()
        best: tuple[float, list[list[int]]] | None = None
        for part in _partitions(list(range(k)), limit):
            score = _score(z, part)
            if best is None or score > best[0] + 1e-12:
                best = (score, part)
        assert best is not None
        groups = best[1]
    else:
        groups = _greedy(affinity, limit)
    ordered = tuple(sorted(tuple(sorted(g)) for g in groups))
    return Grouping(ordered, grouping_score(affinity, ordered))


class _Thunk(nn.Module):
    """Calls ``compute()`` as its forward, so ``functional_call`` can swap ``model``'s tensors."""

    def __init__(self, model: nn.Module, compute: Callable[[], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.compute = compute

    def forward(self) -> Tensor:
        return self.compute()


class AffinityProbe:
    """TAG's lookahead affinity measured inside a training run, with its state in checkpoints.

    Every ``every``-th step (steps ``every, 2 every, ...``, counted from 1) the run's forward
    pass goes through :meth:`capture` and :meth:`measure` is called with the step's losses
    before the method's backward: it takes the Jacobian ``J [k, P]`` of the losses on the shared
    parameters (one backward where the one-backward path applies, else ``k`` vector-Jacobian
    products; the graph is kept for the method) and ``Z = lookahead_affinity(...)`` from ``k + 1``
    forward passes of the same batch, and adds ``Z`` to the running mean (indexed by the run's
    tasks, so a run that samples tasks averages each pair over the steps that had both).

    The lookahead passes leave training untouched: the shared parameters are swapped with
    ``torch.func.functional_call`` (the model is not modified), every buffer is replaced by a
    copy (batch norm's running statistics do not move), no gradient is taken, and the passes
    run in a forked random state re-seeded to the same value before each of them, so dropout
    draws the same masks in the ``k + 1`` passes (``Z`` compares like with like) and the
    training's own random stream continues as if the probe were off. The model stays in its
    mode (training: batch norm uses the batch's statistics, as the step's losses did).

    Args:
        every: measure every ``every`` steps (``>= 1``).
        lr: the lookahead step ``eta`` (TAG uses the run's learning rate).
        max_groups: at most this many networks in the suggested grouping (``None``: any).
        seed: seeds the dropout masks of the lookahead passes (with the step number).

    Example:
        >>> from manytask.nn.backbones import MLP
        >>> from manytask.nn.conditioning import MultiHead
        >>> from functools import partial
        >>> torch.manual_seed(0) and None
        >>> model = MultiHead(partial(MLP, 4, hidden=(8,)), (4,), (1, 1))
        >>> xs, ys = [torch.randn(6, 4), torch.randn(5, 4)], [torch.randn(6, 1), torch.randn(5, 1)]
        >>> def losses():
        ...     outs = model.forward_tasks(xs, [0, 1])
        ...     return torch.stack([(o - y).pow(2).mean() for o, y in zip(outs, ys)])
        >>> probe = AffinityProbe(every=1, lr=0.1)
        >>> probe.init(2)
        >>> with probe.capture(model, step=0):
        ...     step_losses = losses()
        >>> logs = probe.measure(step_losses, model, [6, 5], torch.tensor([0, 1]), losses)
        >>> probe.affinity().shape, int(probe.state["measured"])
        (torch.Size([2, 2]), 1)
        >>> probe.last_path   # the Jacobian came from one backward
        'segments'
        >>> sorted(probe.summary(["a", "b"])["grouping"])
        ['all_together_score', 'each_alone_score', 'groups', 'predicted_score']
    """

    def __init__(self, every: int, lr: float, max_groups: int | None = None, seed: int = 0) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"AffinityProbe: every must be an int >= 1; got {every!r}")
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
            raise ValueError(f"AffinityProbe: lr must be a number > 0; got {lr!r}")
        if max_groups is not None and (
            isinstance(max_groups, bool) or not isinstance(max_groups, int) or max_groups < 1
        ):
            raise ValueError(
                f"AffinityProbe: max_groups must be an int >= 1 or None; got {max_groups!r}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"AffinityProbe: seed must be an int; got {seed!r}")
        self.every = every
        self.lr = float(lr)
        self.max_groups = max_groups
        self.seed = seed
        self.num_tasks = 0
        self.state: dict[str, Tensor] = {}
        self._capture: Any = None
        self._capture_model: nn.Module | None = None
        self._active: Any = None
        self.last_path: str | None = None

    def __repr__(self) -> str:
        return (
            f"AffinityProbe(every={self.every}, lr={self.lr!r}, max_groups={self.max_groups!r}, "
            f"seed={self.seed})"
        )

    def init(self, num_tasks: int) -> None:
        """Start the running mean for ``num_tasks`` tasks."""
        self.num_tasks = num_tasks
        self.state = {
            **TaskAffinity().init(num_tasks),
            "measured": torch.zeros((), dtype=torch.long),
        }

    def due(self, step: int) -> bool:
        """Whether the step after ``step`` completed steps is measured."""
        return (step + 1) % self.every == 0

    # -- the step ------------------------------------------------------------------------

    def _capture_for(self, model: nn.Module) -> Any:
        from manytask.mtl.jacobian import TaskCapture

        if self._capture is None or self._capture_model is not model:
            specific = [p for i in range(self.num_tasks) for p in model.task_parameters(i)]  # type: ignore[operator]
            self._capture = TaskCapture(model, model.shared_parameters(), exclude=specific)  # type: ignore[operator]
            self._capture_model = model
        return self._capture

    def capture(self, model: nn.Module, step: int) -> contextlib.AbstractContextManager[Any]:
        """The context of the step's forward pass: records the shared layers' inputs when the
        step is measured (for the one-backward Jacobian), else nothing."""
        if not self.due(step):
            self._active = None
            return contextlib.nullcontext()
        self._active = self._capture_for(model)
        return self._active

    def measure(
        self,
        losses: Tensor,
        model: nn.Module,
        segments: Sequence[int] | None,
        tasks: Tensor,
        compute: Callable[[], Tensor],
    ) -> dict[str, Tensor]:
        """Measure ``Z`` for this step and add it to the running mean.

        Args:
            losses: ``[k]`` the step's losses, with their graph (kept for the method).
            model: the multi-task model (``shared_parameters()``, ``task_parameters(i)``).
            segments: rows of each task in the concatenated batch (``None``: shared inputs).
            tasks: ``[k]`` the run's index of each loss's task.
            compute: recomputes the ``[k]`` losses of this step's batch through ``model``.

        Returns:
            ``{"task_affinity": mean of Z off the diagonal}`` (empty for one task).
        """
        capture = self._active if self._active is not None else self._capture_for(model)
        self._active = None
        jac, _ = capture.jacobian(losses, segments, retain_graph=True)
        self.last_path = capture.last_path
        shared = list(model.shared_parameters())  # type: ignore[operator]
        ids = {id(p): i for i, p in enumerate(shared)}
        names: list[str] = [""] * len(shared)
        for name, p in model.named_parameters(remove_duplicate=False):
            if id(p) in ids and not names[ids[id(p)]]:
                names[ids[id(p)]] = name
        buffers = {f"model.{n}": b for n, b in model.named_buffers(remove_duplicate=False)}
        thunk = _Thunk(model, compute)
        seed = (self.seed * 1_000_003 + int(self.state["measured"])) % (2**62)

        device = shared[0].device

        def losses_at(params: list[Tensor]) -> Tensor:
            swap = {f"model.{n}": p for n, p in zip(names, params, strict=True)}
            swap.update({n: b.clone() for n, b in buffers.items()})
            with global_rng_untouched(seed, device):  # the same dropout masks every pass
                return torch.func.functional_call(thunk, swap, ())

        with torch.no_grad():
            z = lookahead_affinity(losses_at, shared, jac.detach(), self.lr)
        new = TaskAffinity().update(z, self.state, tasks)
        self.state = {**new, "measured": self.state["measured"] + 1}
        k = z.shape[0]
        if k < 2:
            return {}
        off = z[~torch.eye(k, dtype=torch.bool)]
        return {"task_affinity": off.mean().to(losses.device, losses.dtype)}

    # -- state and results ---------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"probe": repr(self), "num_tasks": self.num_tasks, "state": dict(self.state)}

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        if saved.get("probe") != repr(self) or saved.get("num_tasks") != self.num_tasks:
            raise ValueError(
                f"the checkpoint's task-affinity state was saved by {saved.get('probe')} with "
                f"{saved.get('num_tasks')} tasks, but this run uses {self!r} with "
                f"{self.num_tasks} tasks; resume with the run's own config"
            )
        self.state = {k: v.clone() for k, v in saved["state"].items()}

    def affinity(self) -> Tensor:
        """``[K, K]`` the mean ``Z`` over the measured steps (0 where a pair was never measured)."""
        return TaskAffinity().mean(self.state)

    def summary(self, names: Sequence[str]) -> dict[str, Any]:
        """The mean affinity matrix and the suggested grouping, for ``results.json``.

        ``mean_affinity[i][j]`` is the mean of ``Z_{i->j}`` (row: the task whose step is taken;
        column: the task whose loss is read), ``None`` for a pair never in a step together.
        """
        z = self.affinity()
        count = self.state["count"]
        rows = [
            [None if count[i, j] == 0 else round(float(z[i, j]), 6) for j in range(z.shape[1])]
            for i in range(z.shape[0])
        ]
        grouping = group_tasks(z, self.max_groups)
        alone = [[i] for i in range(z.shape[0])]
        together = [list(range(z.shape[0]))]
        return {
            "tasks": list(names),
            "mean_affinity": rows,
            "steps_measured": int(self.state["measured"]),
            "every": self.every,
            "lr": self.lr,
            "max_groups": self.max_groups,
            "grouping": {
                "groups": grouping.named(names),
                "predicted_score": round(grouping.score, 6),
                "all_together_score": round(grouping_score(z, together), 6),
                "each_alone_score": round(grouping_score(z, alone), 6),
            },
        }


def affinity_heatmap(affinity: Tensor, names: Sequence[str], title: str = "") -> Any:
    """A heatmap figure of a ``[K, K]`` affinity matrix (row ``i``: the task whose step is
    taken; column ``j``: the task whose loss it moves; blue: helps, red: hurts; NaN: blank).

    The colour scale is symmetric around 0 and set by the largest off-diagonal magnitude
    (the diagonal, each task's effect on itself, is usually much larger)."""
    from manytask.mtl.diagnostics._plot import figure

    k = affinity.shape[0]
    z = affinity.detach().to(torch.float32).cpu()
    off = z[~torch.eye(k, dtype=torch.bool)] if k > 1 else z.flatten()
    off = off[~torch.isnan(off)]
    scale = float(off.abs().max()) if off.numel() and float(off.abs().max()) > 0 else 1.0
    size = min(2.0 + 0.35 * k, 14.0)
    fig = figure(size + 1.4, size)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(z.numpy(), cmap="RdBu", vmin=-scale, vmax=scale)
    fig.colorbar(image, ax=ax, label="mean lookahead affinity Z[i -> j]")
    ax.set_xticks(range(k), labels=list(names), rotation=90, fontsize=7 if k > 12 else 9)
    ax.set_yticks(range(k), labels=list(names), fontsize=7 if k > 12 else 9)
    ax.set_xlabel("task j (loss read)")
    ax.set_ylabel("task i (step taken)")
    if k <= 12:
        for i in range(k):
            for j in range(k):
                v = float(z[i, j])
                if v == v:
                    ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=7)
    ax.set_title(title or "Task affinity (TAG lookahead, mean over training)")
    fig.tight_layout()
    return fig
