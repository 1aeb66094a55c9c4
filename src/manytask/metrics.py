"""Metrics of the multi-task problems: pure functions over tensors, found by name.

Every metric takes ``(output, target)`` where ``output`` is what a multi-task model returns
for a task (logits for classification, values for regression) and returns a Python float.
Conventions:

- multiclass: ``output [n, C]`` logits, ``target [n]`` int64 class ids; the prediction is
  ``output.argmax(-1)``;
- binary: ``output [n]`` or ``[n, 1]`` logits, ``target [n]`` 0/1; a logit ``> 0``
  (probability ``> 0.5``) is a positive prediction; ``auc`` ranks the raw scores (any
  monotone transform of the logits gives the same AUC);
- a *label set* (multi-label data, one binary task per label): ``output [n, K]`` logits,
  ``target [n, K]`` 0/1, for ``hamming_loss``, ``micro_f1`` and ``macro_f1``;
- regression: ``output`` and ``target`` of the same shape (``[n]`` or ``[n, d]``).

Definitions (``TP``, ``FP``, ``FN`` count positive/negative predictions against targets):

- ``accuracy``: ``100 * mean(prediction == target)``, in %, higher is better.
- ``auc``: area under the ROC curve, computed exactly from ranks (Mann & Whitney 1947;
  Hanley & McNeil 1982): ``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` where ``R_pos``
  is the sum of the ranks of the positives' scores and tied scores get the mean of their
  ranks, so a tied (positive, negative) pair counts 1/2. It equals the fraction of
  (positive, negative) pairs ordered correctly. Undefined (``ValueError``) when ``target``
  holds one class only. Higher is better.
- ``mse``: ``mean((output - target)^2)``; ``mae``: ``mean(|output - target|)``; lower is better.
- ``hamming_loss``: the fraction of the ``n * K`` label entries predicted wrongly (Schapire &
  Singer 2000); lower is better.
- ``micro_f1``: ``2 TP / (2 TP + FP + FN)`` with the counts summed over all labels.
- ``macro_f1``: the mean over labels of each label's ``2 TP / (2 TP + FP + FN)``; a label
  with ``TP + FP + FN = 0`` (never present, never predicted) scores ``zero_division``
  (default 0, as scikit-learn's ``f1_score`` does).

``auc``, ``hamming_loss`` and both F1 scores are reported as fractions in ``[0, 1]``, as in the
multi-label literature; ``accuracy`` in percent.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "METRICS",
    "Metric",
    "accuracy",
    "auc",
    "get_metric",
    "hamming_loss",
    "macro_f1",
    "mae",
    "micro_f1",
    "mse",
]

Scope = Literal["task", "label_set"]


def _check_pair(name: str, output: Tensor, target: Tensor) -> None:
    if not isinstance(output, Tensor) or not isinstance(target, Tensor):
        raise TypeError(
            f"{name}: output and target must be tensors, got {type(output).__name__} and "
            f"{type(target).__name__}"
        )
    if output.shape[0] != target.shape[0]:
        raise ValueError(
            f"{name}: output has {output.shape[0]} rows but target has {target.shape[0]}; "
            "pass the predictions and targets of the same examples"
        )
    if output.shape[0] == 0:
        raise ValueError(f"{name}: no examples (0 rows); a metric needs at least one")


def _binary_predictions(name: str, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Flattened (prediction, target) booleans for binary outputs (logit > 0 is positive)."""
    out = output.reshape(output.shape[0], -1)
    tgt = target.reshape(target.shape[0], -1)
    if out.shape != tgt.shape:
        raise ValueError(
            f"{name}: output {tuple(output.shape)} and target {tuple(target.shape)} do not match; "
            "binary outputs are one logit per label"
        )
    bad = (tgt != 0) & (tgt != 1)
    if bool(bad.any()):
        raise ValueError(f"{name}: binary targets must be 0 or 1, found {tgt[bad][0].item()!r}")
    return out > 0, tgt == 1


def accuracy(output: Tensor, target: Tensor) -> float:
    """Percentage of correct predictions (multiclass argmax, or binary logit > 0).

    Args:
        output: ``[n, C]`` logits (multiclass, ``C >= 2``) or ``[n]`` / ``[n, 1]`` logits
            (binary).
        target: ``[n]`` class ids (multiclass) or 0/1 labels (binary).

    Returns:
        Accuracy in percent.

    Example:
        >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]]), torch.tensor([0, 1, 0]))
        100.0
    """
    _check_pair("accuracy", output, target)
    if output.dim() == 2 and output.shape[1] > 1:
        if target.shape != output.shape[:1]:
            raise ValueError(
                f"accuracy: multiclass target must be [n] = [{output.shape[0]}], got "
                f"{tuple(target.shape)}"
            )
        correct = output.argmax(-1) == target.long()
    else:
        pred, tgt = _binary_predictions("accuracy", output, target)
        correct = pred == tgt
    return 100.0 * correct.double().mean().item()


def _average_ranks(scores: Tensor) -> Tensor:
    """1-based ranks of ``scores`` [n] (ascending); tied values get the mean of their ranks."""
    values, order = torch.sort(scores.double(), stable=True)
    _, counts = torch.unique_consecutive(values, return_counts=True)
    ends = torch.cumsum(counts, 0).double()  # last 1-based rank of each tie group
    mean_rank = ends - (counts.double() - 1.0) / 2.0
    ranks = torch.empty_like(values)
    ranks[order] = torch.repeat_interleave(mean_rank, counts)
    return ranks


def auc(output: Tensor, target: Tensor) -> float:
    """Exact area under the ROC curve from ranks, ties counted as 1/2.

    Args:
        output: ``[n]`` or ``[n, 1]`` scores (logits or probabilities).
        target: ``[n]`` 0/1 labels, both classes present.

    Returns:
        AUC in ``[0, 1]``.

    Raises:
        ValueError: only one class in ``target`` (AUC is undefined).

    Example:
        >>> auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
        0.75
    """
    _check_pair("auc", output, target)
    scores = output.reshape(-1)
    if scores.numel() != output.shape[0]:
        raise ValueError(f"auc: expected one score per example, got output {tuple(output.shape)}")
    _, positive = _binary_predictions("auc", scores, target)
    positive = positive.reshape(-1)
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"auc: target has only {'negatives' if n_pos == 0 else 'positives'} "
            f"({positive.numel()} examples); AUC needs both classes"
        )
    ranks = _average_ranks(scores)
    r_pos = ranks[positive].sum().item()
    return (r_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def mse(output: Tensor, target: Tensor) -> float:
    """Mean squared error over every element.

    Example:
        >>> mse(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 0.0, 1.0]))
        4.333333333333333
    """
    _check_pair("mse", output, target)
    if output.shape != target.shape:
        raise ValueError(f"mse: output {tuple(output.shape)} != target {tuple(target.shape)}")
    return (output.double() - target.double()).pow(2).mean().item()


def mae(output: Tensor, target: Tensor) -> float:
    """Mean absolute error over every element.

    Example:
        >>> mae(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 0.0, 1.0]))
        1.6666666666666667
    """
    _check_pair("mae", output, target)
    if output.shape != target.shape:
        raise ValueError(f"mae: output {tuple(output.shape)} != target {tuple(target.shape)}")
    return (output.double() - target.double()).abs().mean().item()


def _label_set(name: str, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    _check_pair(name, output, target)
    if output.dim() != 2 or target.dim() != 2:
        raise ValueError(
            f"{name}: expected output and target [n, K] (one column per label), got "
            f"{tuple(output.shape)} and {tuple(target.shape)}"
        )
    return _binary_predictions(name, output, target)


def hamming_loss(output: Tensor, target: Tensor) -> float:
    """Fraction of the ``n * K`` label entries predicted wrongly (logit > 0 = present).

    Example:
        >>> hamming_loss(torch.tensor([[1.0, -1.0], [1.0, 1.0]]), torch.tensor([[1, 1], [0, 1]]))
        0.5
    """
    pred, tgt = _label_set("hamming_loss", output, target)
    return (pred != tgt).double().mean().item()


def _counts(pred: Tensor, tgt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    tp = (pred & tgt).sum(0).double()
    fp = (pred & ~tgt).sum(0).double()
    fn = (~pred & tgt).sum(0).double()
    return tp, fp, fn


def micro_f1(output: Tensor, target: Tensor) -> float:
    """F1 of the counts summed over all labels: ``2 TP / (2 TP + FP + FN)``.

    Example:
        >>> micro_f1(torch.tensor([[1.0, -1.0], [1.0, 1.0]]), torch.tensor([[1, 1], [0, 1]]))
        0.6666666666666666
    """
    pred, tgt = _label_set("micro_f1", output, target)
    tp, fp, fn = (c.sum() for c in _counts(pred, tgt))
    denom = 2 * tp + fp + fn
    return 0.0 if denom.item() == 0 else (2 * tp / denom).item()


def macro_f1(output: Tensor, target: Tensor, zero_division: float = 0.0) -> float:
    """Mean over labels of each label's F1; ``zero_division`` for labels with no TP, FP, FN.

    Example:
        >>> macro_f1(torch.tensor([[1.0, -1.0], [1.0, 1.0]]), torch.tensor([[1, 1], [0, 1]]))
        0.6666666666666666
    """
    pred, tgt = _label_set("macro_f1", output, target)
    tp, fp, fn = _counts(pred, tgt)
    denom = 2 * tp + fp + fn
    per_label = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.tensor(zero_division))
    return per_label.mean().item()


@dataclass(frozen=True)
class Metric:
    """A metric by name: the function, its direction, its unit and where it applies.

    Attributes:
        name: the name used in ``TaskSpec.metrics`` and reports.
        fn: ``fn(output, target) -> float``.
        higher_is_better: the direction (used for Delta_m, best-checkpoint choice, ...).
        unit: ``"%"`` or ``"fraction"`` or ``"squared units"`` / ``"units"`` of the target.
        kinds: the task kinds it applies to (``"multiclass"``, ``"binary"``, ``"regression"``).
        scope: ``"task"`` (one task's output) or ``"label_set"`` (``[n, K]`` over a set of
            binary tasks sharing their inputs).

    Example:
        >>> m = get_metric("auc")
        >>> m.higher_is_better, m.unit, m(torch.tensor([0.2, 0.9]), torch.tensor([0, 1]))
        (True, 'fraction', 1.0)
    """

    name: str
    fn: Callable[[Tensor, Tensor], float]
    higher_is_better: bool
    unit: str
    kinds: tuple[str, ...]
    scope: Scope = "task"

    def __call__(self, output: Tensor, target: Tensor) -> float:
        return self.fn(output, target)

    def __repr__(self) -> str:
        direction = "higher" if self.higher_is_better else "lower"
        return f"Metric({self.name!r}, {direction} is better, unit={self.unit!r}, {self.scope})"


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", accuracy, True, "%", ("multiclass", "binary")),
        Metric("auc", auc, True, "fraction", ("binary",)),
        Metric("mse", mse, False, "squared units", ("regression",)),
        Metric("mae", mae, False, "units", ("regression",)),
        Metric("hamming_loss", hamming_loss, False, "fraction", ("binary",), "label_set"),
        Metric("micro_f1", micro_f1, True, "fraction", ("binary",), "label_set"),
        Metric("macro_f1", macro_f1, True, "fraction", ("binary",), "label_set"),
    )
}
"""Every metric by name."""


def get_metric(name: str) -> Metric:
    """The :class:`Metric` called ``name``; an unknown name lists the valid ones.

    Example:
        >>> get_metric("mse").higher_is_better
        False
    """
    try:
        return METRICS[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), METRICS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown metric {name!r}; valid: {', '.join(METRICS)}.{hint}") from None
