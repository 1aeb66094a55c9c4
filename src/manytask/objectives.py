"""Objectives: what a problem trains on and what it reports.

The training loop, the evaluation, ``results.json`` and the report never branch on the
problem: they ask the run's :class:`Objective` for the loss to minimise, the per-task metric
to report, its name and unit, and whether higher is better.

=================  =========================  ==========================  ==============
name               predictions                training loss               metric
=================  =========================  ==========================  ==============
``classification`` logits ``[T, M, N]``       cross-entropy               accuracy (%)
``regression``     values ``[T, M, out]``     mean squared error          MSE (lower)
``one_hot_mse``    scores ``[T, M, N]``       MSE against one-hot labels  accuracy (%)
``gaussian_nll``   ``[T, M, 2*out]``          Gaussian negative           MSE of the
                   (mean, raw scale)          log-likelihood              mean (lower)
``instance_        logits ``[T, L, N]``       cross-entropy               accuracy (%), and
accuracy``         (a sequence)                                           by instance number
=================  =========================  ==========================  ==============

``one_hot_mse`` is the loss of Relation Networks (Sung et al. 2018, eq. 3): relation scores in
``[0, 1]`` regressed onto one-hot targets. ``gaussian_nll`` is the loss of Conditional Neural
Processes (Garnelo et al. 2018, eq. 4): the predicted mean and variance of a Gaussian; the
variance is ``0.1 + 0.9 * softplus(raw)``, the bounded parameterisation of that paper's code,
so it cannot collapse to zero early in training.

``instance_accuracy`` is the protocol of Santoro et al. (2016, Table 1): every step of a
sequence is predicted, and accuracy is also reported by *instance number*, i.e. at the 1st,
2nd, ... presentation of a class within the sequence (:meth:`Objective.breakdown`). An
objective's breakdown is a set of extra per-task metrics that evaluation reports beside the
main one (mean and 95% CI each), in ``results.json`` and the report.

Example:
    >>> import torch
    >>> obj = get_objective("classification")
    >>> logits = torch.tensor([[[2.0, 0.0], [0.0, 3.0]]])    # 1 task, 2 queries, 2 ways
    >>> obj.per_task(logits, torch.tensor([[0, 0]])).tolist()  # one right, one wrong
    [50.0]
    >>> obj.metric, obj.higher_is_better
    ('acc', True)
"""

from __future__ import annotations

import difflib
import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Classification",
    "GaussianNLL",
    "InstanceAccuracy",
    "Objective",
    "OneHotMSE",
    "Problem",
    "Regression",
    "get_objective",
    "instance_numbers",
    "objective_names",
]

Problem = Literal["classification", "regression"]


class Objective:
    """Base class: the loss and the per-task metric of one kind of problem.

    Attributes:
        name: the registry name (``objective:`` in a recipe).
        problem: ``"classification"`` (integer labels) or ``"regression"`` (real targets).
        metric: short key of the metric in ``metrics.jsonl`` and ``results.json``.
        metric_label: how plots and reports name the metric.
        higher_is_better: the metric's direction.
        unit: appended to formatted values (``"%"`` or ``""``).
    """

    name: ClassVar[str]
    problem: ClassVar[Problem]
    metric: ClassVar[str]
    metric_label: ClassVar[str]
    higher_is_better: ClassVar[bool]
    unit: ClassVar[str] = ""

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """The scalar training loss, averaged over tasks and query points (fp32)."""
        raise NotImplementedError

    def per_task(self, pred: Tensor, target: Tensor) -> Tensor:
        """The metric of every task ``[T]``, in reported units (e.g. accuracy in %)."""
        raise NotImplementedError

    def point_prediction(self, pred: Tensor) -> Tensor:
        """What a user reads as the prediction: class scores, or predicted values."""
        return pred

    def breakdown(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Extra per-task metrics reported beside the main one: ``{name: [T]}``.

        A task without a value for one of them holds NaN there (it is left out of that
        metric's mean). The default is none.
        """
        return {}

    def format(self, mean: float, ci95: float) -> str:
        """``"98.07 +- 0.28%"`` or ``"MSE 0.530 +- 0.040"``."""
        if self.unit == "%":
            return f"{mean:.2f} +- {ci95:.2f}%"
        return f"{self.metric.upper()} {mean:.4g} +- {ci95:.2g}"

    def better(self, a: float, b: float) -> bool:
        """Whether metric value ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _check_labels(pred: Tensor, target: Tensor) -> None:
    if pred.dim() != 3 or target.shape != pred.shape[:2]:
        raise ValueError(
            f"classification needs predictions [T, M, N] and labels [T, M]; got predictions "
            f"{tuple(pred.shape)} and labels {tuple(target.shape)}"
        )
    if target.is_floating_point():
        raise ValueError(f"classification labels must be integers, got dtype {target.dtype}")


def _check_values(pred: Tensor, target: Tensor, width: int) -> None:
    if pred.dim() != 3 or target.dim() != 3 or pred.shape[:2] != target.shape[:2]:
        raise ValueError(
            f"regression needs predictions [T, M, out] and targets [T, M, out]; got "
            f"predictions {tuple(pred.shape)} and targets {tuple(target.shape)}"
        )
    if pred.shape[2] != width * target.shape[2]:
        raise ValueError(
            f"predictions have {pred.shape[2]} values per point, expected "
            f"{width} x {target.shape[2]} for targets {tuple(target.shape)}"
        )


class Classification(Objective):
    """Cross-entropy on logits ``[T, M, N]`` against labels ``[T, M]``; accuracy in %."""

    name = "classification"
    problem = "classification"
    metric = "acc"
    metric_label = "accuracy (%)"
    higher_is_better = True
    unit = "%"

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_labels(pred, target)
        return F.cross_entropy(pred.float().flatten(0, 1), target.flatten())

    def per_task(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_labels(pred, target)
        return 100.0 * (pred.argmax(-1) == target).float().mean(-1)


class OneHotMSE(Classification):
    """Mean squared error between scores ``[T, M, N]`` and one-hot labels; accuracy in %."""

    name = "one_hot_mse"

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_labels(pred, target)
        one_hot = F.one_hot(target, pred.shape[-1]).to(torch.float32)
        return F.mse_loss(pred.float(), one_hot)


class Regression(Objective):
    """Mean squared error on values ``[T, M, out]``; the metric is the per-task MSE."""

    name = "regression"
    problem = "regression"
    metric = "mse"
    metric_label = "MSE"
    higher_is_better = False

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_values(pred, target, 1)
        return F.mse_loss(pred.float(), target.float())

    def per_task(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_values(pred, target, 1)
        return (pred.float() - target.float()).pow(2).mean(dim=(1, 2))


def instance_numbers(labels: Tensor, classes: int | None = None) -> Tensor:
    """Which presentation of its class each step is: ``[T, L]`` labels -> ``[T, L]`` (1-based).

    ``classes`` (labels lie in ``0..classes-1``) avoids reading the labels' maximum, a device
    sync.

    Example:
        >>> instance_numbers(torch.tensor([[2, 0, 2, 2, 0]])).tolist()
        [[1, 1, 2, 3, 2]]
    """
    if labels.dim() != 2 or labels.is_floating_point():
        raise ValueError(f"instance_numbers needs integer labels [T, L], got {labels.shape}")
    if classes is None:
        classes = int(labels.max()) + 1 if labels.numel() else 1
    seen = torch.zeros(*labels.shape, classes, dtype=torch.long, device=labels.device)
    seen.scatter_(-1, labels.unsqueeze(-1), 1)
    return seen.cumsum(1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


class InstanceAccuracy(Classification):
    """Cross-entropy on every step of a sequence; accuracy overall and by instance number.

    The breakdown ``instance_k`` (``k = 1..10``) of a task is the accuracy (%) over the steps
    that show a class for the ``k``-th time (NaN when no class is shown ``k`` times).
    """

    name = "instance_accuracy"
    instances: ClassVar[tuple[int, ...]] = tuple(range(1, 11))

    def breakdown(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        _check_labels(pred, target)
        correct = (pred.argmax(-1) == target).float()
        number = instance_numbers(target, pred.shape[-1])
        out = {}
        for k in self.instances:
            mask = (number == k).float()
            out[f"instance_{k}"] = 100.0 * (correct * mask).sum(1) / mask.sum(1)
        return out


def gaussian_params(pred: Tensor) -> tuple[Tensor, Tensor]:
    """Split ``[..., 2*out]`` into the mean and the variance ``(0.1 + 0.9 softplus(raw))^2``."""
    mean, raw = pred.float().chunk(2, dim=-1)
    sigma = 0.1 + 0.9 * F.softplus(raw)
    return mean, sigma.pow(2)


class GaussianNLL(Regression):
    """Gaussian negative log-likelihood of targets under ``(mean, variance)`` predictions.

    Predictions are ``[T, M, 2*out]``: the mean, then the raw scale (see the module docstring).
    The reported metric is the MSE of the mean, so runs compare with plain regression.
    """

    name = "gaussian_nll"

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_values(pred, target, 2)
        mean, var = gaussian_params(pred)
        t = target.float()
        return 0.5 * ((t - mean).pow(2) / var + var.log() + math.log(2 * math.pi)).mean()

    def per_task(self, pred: Tensor, target: Tensor) -> Tensor:
        _check_values(pred, target, 2)
        mean, _ = gaussian_params(pred)
        return (mean - target.float()).pow(2).mean(dim=(1, 2))

    def point_prediction(self, pred: Tensor) -> Tensor:
        return gaussian_params(pred)[0]


_OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (Classification, Regression, OneHotMSE, GaussianNLL, InstanceAccuracy)
}


def objective_names() -> list[str]:
    """Names accepted by :func:`get_objective`."""
    return sorted(_OBJECTIVES)


def get_objective(name: str) -> Objective:
    """The objective called ``name``; an unknown name lists the valid ones."""
    try:
        return _OBJECTIVES[name]()
    except KeyError:
        close = difflib.get_close_matches(name, list(_OBJECTIVES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown objective {name!r}.{hint} Valid: {', '.join(objective_names())}"
        ) from None
