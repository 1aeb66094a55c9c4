"""Small exact solvers for the convex problems of the aggregators (no QP library needed).

Every problem here lives in the space of task weights (``K`` numbers, ``K`` = tasks), built
from the Gramian ``G = J J^T`` ``[K, K]``, never from the ``[K, P]`` Jacobian, so they are tiny
and are solved in float64 NumPy on the CPU:

- :func:`box_qp`: ``min 1/2 x^T Q x + q^T x`` subject to ``x >= lower`` and, optionally,
  ``sum(x) = 1`` (the probability simplex when ``lower = 0``). A primal active-set method
  (Nocedal & Wright, *Numerical Optimization*, 2nd ed., Algorithm 16.3): each iteration solves
  the equality-constrained problem on the free variables (one ``(f+1) x (f+1)`` linear system),
  then either moves to the nearest blocking bound or frees the bound with the most negative
  Lagrange multiplier. It ends at a point that meets the KKT conditions exactly (up to round-off)
  after at most a few ``K`` iterations; MGDA's min-norm point and UPGrad's projections use it.
- :func:`nonneg_qp`: ``min 1/2 x^T Q x + q^T x`` subject to ``x >= 0`` by block principal
  pivoting (Judice & Pires 1994; Kim & Park 2011 use it for non-negative least squares): it
  exchanges every infeasible variable between the free and the bound set at once, so it needs
  a handful of linear solves where the active-set method frees one variable per solve; a
  backup rule (exchange only the largest infeasible index) guarantees finite termination for
  a positive definite ``Q``. UPGrad's ``K`` dual-cone projections use it.
- :func:`nash_bargaining`: the ``alpha > 0`` with ``G alpha = 1 / alpha`` (Nash-MTL), by damped
  Newton on the strictly convex ``1/2 a^T G a - sum(log a)``, whose gradient vanishes there.
- :func:`cagrad_weights`: ``min_{w in simplex} w^T a + c sqrt(w^T G w)`` (CAGrad's dual) by the
  variational form ``sqrt(t) = min_{s > 0} t / (2 s) + s / 2``: alternate an exact simplex QP in
  ``w`` with the closed-form ``s = ||J^T w||`` until neither moves (both steps decrease the same
  jointly convex function).

Singular Gramians (a zero row, identical or opposite rows) are handled by adding
``ridge * trace(G) / K`` to the diagonal: the problems become strictly convex, their solution is
unique (hence invariant to the order of the tasks), and the solution moves by a relative
``~1e-10``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["box_qp", "cagrad_weights", "nash_bargaining", "nonneg_qp", "regularized"]

_RIDGE = 1e-10


def regularized(gramian: np.ndarray, ridge: float = _RIDGE) -> np.ndarray:
    """``G + ridge * max(trace(G) / K, tiny) * I``: strictly positive definite, same scale."""
    k = gramian.shape[0]
    scale = float(np.trace(gramian)) / k
    if not scale > 1e-300:
        scale = 1.0
    return gramian + (ridge * scale) * np.eye(k)


def box_qp(
    Q: np.ndarray,
    q: np.ndarray,
    lower: np.ndarray,
    *,
    simplex: bool = False,
    x0: np.ndarray | None = None,
    max_iter: int | None = None,
) -> np.ndarray:
    """``argmin 1/2 x^T Q x + q^T x`` s.t. ``x >= lower`` (and ``sum(x) == 1`` with ``simplex``).

    Args:
        Q: ``[K, K]`` symmetric positive definite (pass :func:`regularized` Gramians).
        q: ``[K]`` linear term.
        lower: ``[K]`` lower bounds.
        simplex: add the constraint ``sum(x) = 1`` (needs ``sum(lower) <= 1``).
        x0: a feasible starting point (warm start); default a vertex / the lower bounds.
        max_iter: iteration cap (default ``10 K + 50``).

    Returns:
        ``[K]`` float64 solution.
    """
    k = Q.shape[0]
    lower = np.asarray(lower, dtype=np.float64)
    x: np.ndarray | None = None
    if x0 is not None:
        x = np.maximum(np.asarray(x0, dtype=np.float64), lower)
        if simplex and abs(1.0 - x.sum()) > 1e-9:
            x = None  # not feasible: start from a vertex
    if x is None:
        x = lower.copy()
        if simplex:
            # The best vertex of the (shifted) simplex: all the free mass on one coordinate.
            mass = 1.0 - lower.sum()
            vals = 0.5 * mass * mass * np.diag(Q) + mass * (q + Q @ lower)
            x[int(np.argmin(vals))] += mass
    # Working set: bounds held active. Start with every bound that x sits on.
    active = np.isclose(x, lower, rtol=0.0, atol=1e-15)
    if simplex and active.all():
        active[int(np.argmax(x - lower))] = False
    tol = 1e-12 * max(1.0, float(np.abs(Q).max()), float(np.abs(q).max()))
    for _ in range(max_iter or 10 * k + 50):
        g = Q @ x + q
        free = np.flatnonzero(~active)
        # Equality-constrained step p on the free set: Q_FF p_F + g_F = lam * 1, sum p_F = 0.
        if free.size:
            qff = Q[np.ix_(free, free)]
            if simplex:
                n = free.size
                kkt = np.zeros((n + 1, n + 1))
                kkt[:n, :n] = qff
                kkt[:n, n] = -1.0
                kkt[n, :n] = 1.0
                rhs = np.concatenate([-g[free], [0.0]])
                sol = np.linalg.solve(kkt, rhs)
                p_free, lam = sol[:n], sol[n]
            else:
                p_free, lam = np.linalg.solve(qff, -g[free]), 0.0
        else:
            p_free, lam = np.zeros(0), 0.0
        if np.abs(p_free).max(initial=0.0) <= 1e-14 * max(1.0, np.abs(x).max()):
            # Stationary on the working set: multipliers of the active bounds decide.
            if not simplex and free.size == 0:
                lam = 0.0
            elif simplex and free.size:
                lam = float(np.mean(g[free] + qff @ p_free))
            mu = g - lam
            mu[~active] = np.inf
            j = int(np.argmin(mu))
            if mu[j] >= -tol:
                return x
            active[j] = False
            continue
        p = np.zeros(k)
        p[free] = p_free
        # Longest step in [0, 1] that keeps x + step * p >= lower.
        step, block = 1.0, -1
        dec = free[p_free < 0]
        if dec.size:
            ratios = (lower[dec] - x[dec]) / p[dec]
            i = int(np.argmin(ratios))
            if ratios[i] < 1.0:
                step, block = max(float(ratios[i]), 0.0), int(dec[i])
        x = x + step * p
        if block >= 0:
            x[block] = lower[block]
            active[block] = True
    return x


def nonneg_qp(Q: np.ndarray, q: np.ndarray, *, max_iter: int | None = None) -> np.ndarray:
    """``argmin 1/2 x^T Q x + q^T x`` s.t. ``x >= 0`` (block principal pivoting).

    The KKT conditions are the linear complementarity problem ``y = Q x + q``, ``x >= 0``,
    ``y >= 0``, ``x^T y = 0``. With ``F`` the free set (``x_F`` solves ``Q_FF x_F = -q_F``,
    ``x`` is 0 elsewhere), the infeasible indices are ``{i in F: x_i < 0}`` and
    ``{i not in F: y_i < 0}``; they all switch sides while their number keeps falling (or for
    three more tries), else only the largest one does.

    Args:
        Q: ``[K, K]`` symmetric positive definite (pass :func:`regularized` Gramians).
        q: ``[K]`` linear term.
    """
    k = Q.shape[0]
    free = q < 0
    best, tries = k + 1, 3
    tol = 1e-13 * max(1.0, float(np.abs(Q).max()), float(np.abs(q).max()))
    x = np.zeros(k)
    for _ in range(max_iter or 10 * k + 50):
        x = np.zeros(k)
        idx = np.flatnonzero(free)
        if idx.size:
            x[idx] = np.linalg.solve(Q[np.ix_(idx, idx)], -q[idx])
        y = Q @ x + q
        bad = (free & (x < -tol)) | (~free & (y < -tol))
        n_bad = int(bad.sum())
        if n_bad == 0:
            return np.maximum(x, 0.0)
        if n_bad < best:
            best, tries = n_bad, 3
            free = free ^ bad
        elif tries > 0:
            tries -= 1
            free = free ^ bad
        else:
            j = int(np.flatnonzero(bad)[-1])
            free[j] = not free[j]
    return np.maximum(x, 0.0)


def nash_bargaining(gramian: np.ndarray, alpha0: np.ndarray | None = None) -> np.ndarray:
    """The ``alpha > 0`` solving ``G alpha = 1 / alpha`` (elementwise).

    It is the minimiser of ``phi(a) = 1/2 a^T G a - sum_i log a_i``, strictly convex for a
    positive definite ``G`` (pass :func:`regularized` Gramians). Damped Newton with a
    backtracking line search that keeps ``a > 0``; float64.

    Args:
        gramian: ``[K, K]`` symmetric positive definite.
        alpha0: a positive warm start (the previous step's solution), else ``1 / sqrt(diag G)``.
    """
    k = gramian.shape[0]
    if alpha0 is not None and np.all(np.asarray(alpha0) > 0) and np.all(np.isfinite(alpha0)):
        a = np.asarray(alpha0, dtype=np.float64).copy()
    else:
        a = 1.0 / np.sqrt(np.maximum(np.diag(gramian), 1e-300))

    def phi(v: np.ndarray) -> float:
        return float(0.5 * v @ gramian @ v - np.log(v).sum())

    f = phi(a)
    for _ in range(200):
        grad = gramian @ a - 1.0 / a
        hess = gramian + np.diag(1.0 / (a * a))
        step = -np.linalg.solve(hess, grad)
        decrement = float(-grad @ step)
        if decrement < 1e-20 * max(1.0, k):
            break
        t = 1.0
        neg = step < 0
        if neg.any():
            t = min(1.0, 0.99 * float(np.min(-a[neg] / step[neg])))
        while True:
            cand = a + t * step
            fc = phi(cand)
            if fc <= f - 0.25 * t * decrement or t < 1e-12:
                break
            t *= 0.5
        a, f = cand, fc
    return a


def cagrad_weights(
    gramian: np.ndarray, c: float, *, tol: float = 1e-10, max_iter: int = 200
) -> tuple[np.ndarray, float]:
    """CAGrad's dual: ``w* = argmin_{w in simplex} w^T G b + c ||g0|| sqrt(w^T G w)``.

    ``b = 1/K`` (so ``G b`` holds ``g_i . g0``, ``g0`` the mean gradient) and the radius is
    ``c ||g0||``. Returns ``(w*, ||g_w*||)``; the caller forms the direction
    ``g0 + c ||g0|| / ||g_w*|| g_w*``.

    Args:
        gramian: ``[K, K]`` symmetric positive definite.
        c: ``>= 0``, the radius factor.
    """
    k = gramian.shape[0]
    b = np.full(k, 1.0 / k)
    a = gramian @ b
    radius = c * math.sqrt(max(float(b @ a), 0.0))
    zero = np.zeros(k)
    if radius == 0.0:
        # Nothing to trade: any w gives the mean direction; report the min-norm point.
        w = box_qp(gramian, zero, zero, simplex=True)
        return w, math.sqrt(max(float(w @ gramian @ w), 0.0))
    w = b.copy()
    s = math.sqrt(max(float(w @ gramian @ w), 1e-300))
    for _ in range(max_iter):
        w_new = box_qp((radius / s) * gramian, a, zero, simplex=True, x0=w)
        s_new = math.sqrt(max(float(w_new @ gramian @ w_new), 1e-300))
        done = np.abs(w_new - w).max() <= tol and abs(s_new - s) <= tol * max(s, 1e-300)
        w, s = w_new, s_new
        if done:
            break
    return w, s
