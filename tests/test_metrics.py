"""Metrics: golden values computed by hand, and AUC against a brute-force pairwise count."""

from __future__ import annotations

import itertools

import pytest
import torch

from manytask import metrics as M


def brute_force_auc(scores: list[float], labels: list[int]) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auc_golden_values() -> None:
    # Hand count: positives 0.35, 0.8 vs negatives 0.1, 0.4 -> pairs correct: 0.35>0.1,
    # 0.8>0.1, 0.8>0.4 -> 3 of 4.
    assert M.auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == 0.75
    # Ties: positives {0.5, 0.9}, negatives {0.5, 0.5}: 0.5 vs 0.5 twice = 2 * 1/2, 0.9 wins
    # twice -> 3 of 4.
    assert M.auc(torch.tensor([0.5, 0.5, 0.5, 0.9]), torch.tensor([0, 1, 0, 1])) == 0.75
    # All tied: 1/2; perfectly reversed: 0; [n, 1] logits as a model returns them.
    assert M.auc(torch.zeros(5), torch.tensor([0, 1, 0, 1, 1])) == 0.5
    assert M.auc(torch.tensor([[3.0], [2.0], [1.0]]), torch.tensor([0.0, 1.0, 1.0])) == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_auc_equals_pairwise_count_with_many_ties(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, 60, (1,), generator=g))
    scores = torch.randint(0, 5, (n,), generator=g).float()  # heavy ties
    labels = torch.randint(0, 2, (n,), generator=g)
    labels[0], labels[1] = 0, 1
    expected = brute_force_auc(scores.tolist(), labels.tolist())
    assert M.auc(scores, labels) == pytest.approx(expected, abs=1e-12)
    # Rank-based: any strictly increasing transform of the scores gives the same AUC.
    assert M.auc(torch.sigmoid(scores * 3 - 1), labels) == pytest.approx(expected, abs=1e-12)


def test_auc_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="only negatives"):
        M.auc(torch.tensor([0.2, 0.3]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="0 or 1"):
        M.auc(torch.tensor([0.2, 0.3]), torch.tensor([0, 2]))


def test_accuracy_multiclass_and_binary() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 4.0], [5.0, 0, 0]])
    assert M.accuracy(logits, torch.tensor([0, 1, 2, 1])) == 75.0
    # binary: logit > 0 is positive; 0.0 is negative.
    assert M.accuracy(torch.tensor([0.3, -1.0, 0.0, 2.0]), torch.tensor([1.0, 0, 1, 0])) == 50.0
    assert M.accuracy(torch.tensor([[0.3], [-1.0]]), torch.tensor([1.0, 0.0])) == 100.0
    with pytest.raises(ValueError, match="rows"):
        M.accuracy(logits, torch.tensor([0, 1]))


def test_regression_metrics() -> None:
    out = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    tgt = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    # errors 1, 0, 2, 4 -> squares 1, 0, 4, 16
    assert M.mse(out, tgt) == 21 / 4
    assert M.mae(out, tgt) == 7 / 4
    with pytest.raises(ValueError, match="target"):
        M.mse(out, tgt[:, :1])


def test_label_set_metrics_golden() -> None:
    # 3 examples x 3 labels. Predictions (logit > 0):
    #   [1 0 1]   targets [1 1 0]
    #   [0 0 1]           [0 0 1]
    #   [1 1 0]           [1 0 0]
    out = torch.tensor([[2.0, -1, 1], [-3.0, -1, 2], [1.0, 1, -1]])
    tgt = torch.tensor([[1, 1, 0], [0, 0, 1], [1, 0, 0]])
    # wrong entries: (0,1), (0,2), (2,1) -> 3 of 9
    assert M.hamming_loss(out, tgt) == pytest.approx(3 / 9)
    # per label: label0 TP=2 FP=0 FN=0 -> F1 1; label1 TP=0 FP=1 FN=1 -> 0;
    # label2 TP=1 FP=1 FN=0 -> 2/3. Micro: TP=3 FP=2 FN=1 -> 6/9.
    assert M.micro_f1(out, tgt) == pytest.approx(6 / 9)
    assert M.macro_f1(out, tgt) == pytest.approx((1 + 0 + 2 / 3) / 3)
    # A label never present and never predicted: zero_division decides (default 0).
    out2 = torch.tensor([[1.0, -1.0], [-1.0, -1.0]])
    tgt2 = torch.tensor([[1, 0], [0, 0]])
    assert M.macro_f1(out2, tgt2) == 0.5
    assert M.macro_f1(out2, tgt2, zero_division=1.0) == 1.0
    with pytest.raises(ValueError, match=r"\[n, K\]"):
        M.micro_f1(torch.zeros(3), torch.zeros(3))


def test_registry_directions_and_errors() -> None:
    higher = {n for n, m in M.METRICS.items() if m.higher_is_better}
    assert higher == {"accuracy", "auc", "micro_f1", "macro_f1"}
    assert M.get_metric("accuracy").unit == "%"
    assert M.get_metric("hamming_loss").scope == "label_set"
    with pytest.raises(ValueError, match="Did you mean 'auc'"):
        M.get_metric("acu")
    assert "lower is better" in repr(M.get_metric("mae"))
