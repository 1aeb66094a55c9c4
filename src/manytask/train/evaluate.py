"""Meta-test evaluation: mean accuracy and its 95% confidence interval over fixed episodes."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from manytask.train.progress import progress_bar

__all__ = ["Accuracy", "episode_accuracy", "evaluate", "mean_ci95"]


@dataclass(frozen=True)
class Accuracy:
    """Accuracy over ``n`` episodes: ``mean`` and ``ci95`` are percentages.

    ``ci95 = 1.96 * std / sqrt(n)`` with ``std`` the standard deviation of the per-episode
    accuracies (population form, as in the ProtoNets and MAML evaluation code).
    """

    mean: float
    ci95: float
    std: float
    n: int
    per_episode: tuple[float, ...]

    def __str__(self) -> str:
        return f"{self.mean:.2f} +- {self.ci95:.2f}% (95% CI, {self.n} episodes)"

    def as_dict(self) -> dict[str, float | int]:
        return {"acc": self.mean, "ci95": self.ci95, "std": self.std, "episodes": self.n}


def mean_ci95(values: Iterable[float]) -> tuple[float, float, float]:
    """Mean, ``1.96 * std / sqrt(n)`` and std of ``values`` (std with ``ddof=0``)."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_ci95 needs at least one value")
    n = len(xs)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / n)
    return mean, 1.96 * std / math.sqrt(n), std


def episode_accuracy(logits: Tensor, query_y: Tensor) -> Tensor:
    """Per-task accuracy ``[T]`` from logits ``[T, N*Q, N]`` and labels ``[T, N*Q]``."""
    return (logits.argmax(-1) == query_y).float().mean(-1)


@torch.no_grad()
def evaluate(
    learner: nn.Module,
    episodes: Iterable,  # of manytask.data.Episode
    *,
    total: int | None = None,
    progress: bool = True,
    desc: str = "eval",
) -> Accuracy:
    """Accuracy of ``learner`` on ``episodes`` (each an Episode batch of tasks).

    The learner is put in eval mode for the pass and restored to its previous mode after.
    """
    was_training = learner.training
    learner.eval()
    accs: list[float] = []
    try:
        with progress_bar(total=total, desc=desc, enabled=progress, unit="ep") as bar:
            for ep in episodes:
                logits = learner(ep.support_x, ep.support_y, ep.query_x)
                batch = episode_accuracy(logits, ep.query_y).cpu().tolist()
                accs.extend(batch)
                bar.update(len(batch))
                m = 100.0 * sum(accs) / len(accs)
                bar.set_postfix(acc=f"{m:.2f}")
    finally:
        learner.train(was_training)
    mean, ci, std = mean_ci95(accs)
    return Accuracy(100.0 * mean, 100.0 * ci, 100.0 * std, len(accs), tuple(accs))
