"""Task affinity (TAG) and the grouping of tasks into networks that train together.

Fifty et al., "Efficiently Identifying Task Groupings for Multi-Task Learning", NeurIPS 2021.
The *lookahead* affinity of task ``i`` onto task ``j`` at step ``t`` (eq. 1-2) is

    Z_{i->j} = 1 - L_j(theta_sh - eta grad_sh L_i, theta_j) / L_j(theta_sh, theta_j)

the relative drop of task ``j``'s loss (same batch) after a step on the shared parameters
along task ``i``'s gradient alone: positive when ``i``'s update helps ``j``, negative when it
hurts. Averaged over training it ranks which tasks should share a network.

:func:`lookahead_affinity` computes ``Z`` for one step from the Jacobian the gradient methods
already have (``K`` extra forward passes, no backward); :class:`TaskAffinity` keeps the running
mean as explicit state; :func:`group_tasks` picks the grouping.

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

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Grouping", "TaskAffinity", "group_tasks", "grouping_score", "lookahead_affinity"]


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
    z = affinity.to(torch.float64)
    total = 0.0
    for g in groups:
        if len(g) < 2:
            continue
        idx = torch.tensor(list(g))
        block = z[idx][:, idx]
        total += float((block.sum(0) - block.diagonal()).sum()) / (len(g) - 1)
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
        best: tuple[float, list[list[int]]] | None = None
        for part in _partitions(list(range(k)), limit):
            score = grouping_score(affinity, part)
            if best is None or score > best[0] + 1e-12:
                best = (score, part)
        assert best is not None
        groups = best[1]
    else:
        groups = [[i] for i in range(k)]
        while True:
            current = grouping_score(affinity, groups)
            cand = None
            for a in range(len(groups)):
                for b in range(a + 1, len(groups)):
                    merged = [g for n, g in enumerate(groups) if n not in (a, b)]
                    merged.append(groups[a] + groups[b])
                    gain = grouping_score(affinity, merged) - current
                    if cand is None or gain > cand[0]:
                        cand = (gain, merged)
            if cand is None or (cand[0] <= 0 and len(groups) <= limit):
                break
            groups = cand[1]
    ordered = tuple(sorted(tuple(sorted(g)) for g in groups))
    return Grouping(ordered, grouping_score(affinity, ordered))
