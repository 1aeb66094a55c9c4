"""Synthetic regression tasks with controlled relatedness (Ma et al., KDD 2018, section 3.2).

The MMoE paper's generator for two regression tasks whose relatedness is set by a correlation
score ``-1 <= p <= 1``:

1. draw two orthogonal unit vectors ``u1, u2`` in ``R^d``;
2. given a scale ``c``, set ``w1 = c u1`` and ``w2 = c (p u1 + sqrt(1 - p^2) u2)``, so that
   ``cos(w1, w2) = p``;
3. draw inputs ``x in R^d`` with i.i.d. ``N(0, 1)`` entries;
4. ``y_i = w_i^T x + sum_{j=1}^m sin(alpha_j w_i^T x + beta_j) + eps_i``,
   ``eps_i ~ N(0, 0.01)`` (read as a variance: noise std 0.1), with the same ``alpha_j``,
   ``beta_j`` for both tasks;
5. repeat 3-4 until enough data.

The paper shows that the Pearson correlation of the two labels rises with ``p`` (it is not
equal to ``p``: the sine terms make the tasks non-linear), which the tests check. The paper
leaves ``alpha_j, beta_j`` as "given parameters"; as in its public reproductions they are drawn
from ``N(0, 1)`` here. Defaults: ``d = 100``, ``c = 1``, ``m = 10``; sizes 10,000 / 1,000 /
1,000 (train / validation / test, the split of the Keras reproduction drawbridge/keras-mmoe).
Everything (``u``, ``alpha``, ``beta``, ``x``, noise) comes from
``numpy.random.default_rng(seed)``: the data set is a function of its arguments.
"""

from __future__ import annotations

import itertools
import math
import os

import numpy as np
import torch

from manytask.data.multitask import MultiTaskData, TaskData, TaskSpec

__all__ = ["load_mmoe_synthetic", "mmoe_synthetic_arrays"]


def mmoe_synthetic_arrays(
    p: float,
    n: int,
    *,
    dim: int = 100,
    c: float = 1.0,
    m: int = 10,
    noise_std: float = 0.1,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(x [n, dim], y [n, 2])`` from the MMoE generator (module docstring).

    Args:
        p: correlation score, ``-1 <= p <= 1`` (the cosine between ``w1`` and ``w2``).
        n: number of examples.
        dim: input dimension ``d``.
        c: scale of the weight vectors.
        m: number of sine terms.
        noise_std: standard deviation of the label noise.
        seed: seeds everything.

    Example:
        >>> x, y = mmoe_synthetic_arrays(1.0, 5, dim=4, noise_std=0.0)
        >>> x.shape, y.shape, bool(np.allclose(y[:, 0], y[:, 1]))
        ((5, 4), (5, 2), True)
    """
    if not -1.0 <= p <= 1.0:
        raise ValueError(f"p must be in [-1, 1], got {p!r}")
    for name, v, low in (("n", n, 1), ("dim", dim, 2), ("m", m, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    if not (math.isfinite(c) and c > 0) or not (math.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"c must be > 0 and noise_std >= 0, got c={c!r}, noise_std={noise_std!r}")
    rng = np.random.default_rng(seed)
    # Two orthonormal vectors: Gram-Schmidt on two Gaussian draws.
    a, b = rng.standard_normal(dim), rng.standard_normal(dim)
    u1 = a / np.linalg.norm(a)
    b = b - (b @ u1) * u1
    u2 = b / np.linalg.norm(b)
    w = np.stack([c * u1, c * (p * u1 + math.sqrt(max(0.0, 1.0 - p * p)) * u2)])  # [2, d]
    alpha, beta = rng.standard_normal(m), rng.standard_normal(m)
    x = rng.standard_normal((n, dim))
    z = x @ w.T  # [n, 2]: w_i^T x
    y = z + np.sin(alpha[None, None, :] * z[:, :, None] + beta).sum(-1)
    y = y + noise_std * rng.standard_normal(y.shape)
    return x.astype(np.float32), y.astype(np.float32)


def load_mmoe_synthetic(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    p: float = 0.5,
    sizes: tuple[int, int, int] = (10_000, 1_000, 1_000),
    dim: int = 100,
    c: float = 1.0,
    m: int = 10,
    noise_std: float = 0.1,
) -> MultiTaskData:
    """Two MMoE synthetic regression tasks with correlation score ``p`` (shared inputs).

    Args:
        data_dir: accepted for the common loader signature; nothing is read.
        seed: seeds the generator (directions, sine parameters, inputs, noise).
        p: correlation score in ``[-1, 1]``.
        sizes: examples in (train, validation, test); one draw of ``sum(sizes)`` examples
            split in that order.
        dim, c, m, noise_std: generator parameters, see :func:`mmoe_synthetic_arrays`.

    Returns:
        Tasks ``"y1"`` and ``"y2"`` (regression, MSE), ``x`` ``float32 [n, dim]``, ``y``
        ``[n, 1]``; ``metadata`` per task: (p, task index).

    Example:
        >>> data = load_mmoe_synthetic(p=0.9, sizes=(100, 10, 10), dim=8)
        >>> data.task_names, data.sizes("train"), data.input_shape
        (('y1', 'y2'), (100, 100), (8,))
    """
    del data_dir
    if len(sizes) != 3 or any(isinstance(s, bool) or not isinstance(s, int) for s in sizes):
        raise ValueError(f"sizes must be three ints (train, val, test), got {sizes!r}")
    if sizes[0] < 1 or sizes[1] < 0 or sizes[2] < 1:
        raise ValueError(f"sizes need train >= 1, val >= 0, test >= 1, got {sizes!r}")
    x, y = mmoe_synthetic_arrays(p, sum(sizes), dim=dim, c=c, m=m, noise_std=noise_std, seed=seed)
    tasks = tuple(
        TaskSpec(
            f"y{i + 1}",
            "regression",
            1,
            description=f"synthetic regression task {i + 1} of 2 from the MMoE generator "
            f"(Ma et al. 2018), the two tasks' weight vectors at cosine p={p}",
            metadata=(float(p), float(i)),
        )
        for i in range(2)
    )
    bounds = np.cumsum((0, *sizes))
    splits = []
    for lo, hi in itertools.pairwise(bounds):
        xs = torch.from_numpy(np.ascontiguousarray(x[lo:hi]))
        splits.append(
            tuple(
                TaskData(xs, torch.from_numpy(np.ascontiguousarray(y[lo:hi, i : i + 1])))
                for i in range(2)
            )
        )
    return MultiTaskData(
        "mmoe_synthetic",
        tasks,
        train=splits[0],
        val=splits[1],
        test=splits[2],
        input_shape=(dim,),
        shared_inputs=True,
    )
