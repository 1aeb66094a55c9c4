"""The MMoE synthetic generator (Ma et al. 2018, section 3.2)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from manytask.data.synthetic import load_mmoe_synthetic, mmoe_synthetic_arrays


def test_label_correlation_rises_with_p() -> None:
    corr = []
    for p in (0.0, 0.5, 0.9, 1.0):
        _, y = mmoe_synthetic_arrays(p, 4000, dim=50, seed=7)
        corr.append(np.corrcoef(y[:, 0], y[:, 1])[0, 1])
    assert all(a < b for a, b in itertools.pairwise(corr)), corr
    assert abs(corr[0]) < 0.1 and corr[-1] > 0.9


def test_weights_have_cosine_p_and_labels_follow_the_formula() -> None:
    # Without noise and sine terms, y = W x exactly, so W can be recovered by least squares.
    x, y = mmoe_synthetic_arrays(0.3, 200, dim=6, m=0, c=2.0, noise_std=0.0, seed=1)
    w, *_ = np.linalg.lstsq(x.astype(np.float64), y.astype(np.float64), rcond=None)
    w1, w2 = w[:, 0], w[:, 1]
    assert np.linalg.norm(w1) == pytest.approx(2.0, rel=1e-4)
    assert np.linalg.norm(w2) == pytest.approx(2.0, rel=1e-4)
    assert w1 @ w2 / (np.linalg.norm(w1) * np.linalg.norm(w2)) == pytest.approx(0.3, abs=1e-4)


def test_seeded_and_shapes() -> None:
    a = load_mmoe_synthetic(p=0.5, sizes=(50, 10, 20), dim=8, seed=3)
    b = load_mmoe_synthetic(p=0.5, sizes=(50, 10, 20), dim=8, seed=3)
    c = load_mmoe_synthetic(p=0.5, sizes=(50, 10, 20), dim=8, seed=4)
    assert torch.equal(a.train[1].y, b.train[1].y) and not torch.equal(a.train[1].y, c.train[1].y)
    assert a.sizes("val") == (10, 10) and a.train[0].y.shape == (50, 1)
    assert a.shared_inputs and a.train[0].x is a.train[1].x
    assert [t.metadata for t in a.tasks] == [(0.5, 0.0), (0.5, 1.0)]
    for kwargs, pattern in (
        ({"p": 1.5}, "p must be"),
        ({"sizes": (10, 1)}, "three ints"),
        ({"dim": 1}, "dim must be"),
    ):
        with pytest.raises(ValueError, match=pattern):
            load_mmoe_synthetic(**kwargs)  # type: ignore[arg-type]
