"""The aggregator battery, each paper's property, golden values, and torchjd's definitions."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from manytask.mtl.aggregators import (
    IMTLG,
    MGDA,
    Aggregator,
    AlignedMTL,
    CAGrad,
    GradDrop,
    GradVac,
    GramianAggregator,
    Mean,
    NashMTL,
    PCGrad,
    Sum,
    UPGrad,
    dual_cone_weights,
    min_norm_weights,
)
from manytask.mtl.aggregators.aligned_mtl import balance_matrix

ALL: list[Aggregator] = [
    Mean(),
    Sum(),
    MGDA(),
    PCGrad(),
    GradDrop(),
    GradDrop(leak=[0.5, 0.0, 0.2, 1.0]),
    CAGrad(),
    CAGrad(c=0.8, rescale="none"),
    GradVac(),
    IMTLG(),
    NashMTL(),
    NashMTL(max_norm=0.0),
    AlignedMTL(),
    AlignedMTL(scale="mean"),
    UPGrad(),
]
IDS = [repr(a) for a in ALL]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def jac(k: int = 4, p: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randn(k, p, generator=gen(seed), dtype=torch.float64)


def degenerate() -> dict[str, torch.Tensor]:
    j = jac()
    return {
        "zero row": torch.cat([j[:3], torch.zeros(1, 7, dtype=j.dtype)]),
        "identical rows": torch.cat([j[:2], j[1:2], j[1:2]]),
        "opposite rows": torch.cat([j[:2], -j[:1], j[3:]]),
        "all zero": torch.zeros(4, 7, dtype=j.dtype),
        "one row": j[:1].repeat(4, 1) * torch.tensor([[1.0], [2.0], [0.5], [3.0]], dtype=j.dtype),
        "rank one, opposite": torch.cat([j[:1], -j[:1], 2 * j[:1], -3 * j[:1]]),
    }


# -- the contract battery -----------------------------------------------------------------


@pytest.mark.parametrize("agg", ALL, ids=IDS)
def test_contract(agg):
    j = jac()
    d = agg(j, generator=gen())
    assert d.shape == (7,) and d.dtype == j.dtype and torch.isfinite(d).all()
    # float32 in, float32 out; determinism under the same generator
    d32 = agg(j.float(), generator=gen())
    assert d32.dtype == torch.float32
    assert torch.equal(agg(j, generator=gen(3)), agg(j, generator=gen(3)))
    # repr names the class and every hyper-parameter
    assert repr(agg).startswith(type(agg).__name__ + "(")
    for key in agg.hyperparameters():
        assert f"{key}=" in repr(agg)
    # the stateful interface gives the same first step
    state = agg.init(4)
    d2, state = agg.update(j, state, generator=gen())
    assert torch.equal(d2, d)
    d3, _ = agg.update(j, state, generator=gen())
    assert torch.isfinite(d3).all()


@pytest.mark.parametrize("agg", ALL, ids=IDS)
@pytest.mark.parametrize("case", list(degenerate()))
def test_finite_on_degenerate_jacobians(agg, case):
    j = degenerate()[case]
    d = agg(j, generator=gen())
    assert torch.isfinite(d).all(), case
    if case == "all zero":
        assert torch.equal(d, torch.zeros_like(d))


@pytest.mark.parametrize("agg", ALL, ids=IDS)
def test_bad_input_is_refused_clearly(agg):
    with pytest.raises(ValueError, match=r"float tensor \[K, P\]"):
        agg(torch.ones(3), generator=gen())
    with pytest.raises(ValueError, match="NaN/inf"):
        agg(torch.tensor([[1.0, math.nan], [0.0, 1.0]]), generator=gen())
    with pytest.raises(ValueError, match="num_tasks must be a positive int"):
        agg.init(0)


def test_randomised_aggregators_need_a_generator():
    for agg in (PCGrad(), GradDrop(), GradVac()):
        assert agg.stochastic
        with pytest.raises(ValueError, match="randomised: pass generator="):
            agg(jac())
    assert not MGDA().stochastic
    MGDA()(jac())  # deterministic ones need none


@pytest.mark.parametrize(
    "agg", [a for a in ALL if not a.stochastic] + [GradDrop()], ids=lambda a: repr(a)
)
def test_permuting_tasks_permutes_nothing_else(agg):
    j = jac(k=5)
    d = agg(j, generator=gen())
    for perm in (torch.tensor([4, 2, 0, 1, 3]), torch.tensor([1, 0, 2, 3, 4])):
        torch.testing.assert_close(agg(j[perm], generator=gen()), d, atol=1e-10, rtol=1e-8)
    if isinstance(agg, GramianAggregator):
        w, _ = agg.weights(j @ j.T)
        wp, _ = agg.weights((j @ j.T)[perm][:, perm])
        torch.testing.assert_close(wp, w[perm], atol=1e-10, rtol=1e-8)


def test_constructor_arguments_are_checked():
    with pytest.raises(ValueError, match="c must be in"):
        CAGrad(c=-1)
    with pytest.raises(ValueError, match="rescale must be one of"):
        CAGrad(rescale="twice")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beta must be in"):
        GradVac(beta=2)
    with pytest.raises(ValueError, match="leak must be in"):
        GradDrop(leak=[0.5, 1.5])
    with pytest.raises(ValueError, match="update_weights_every"):
        NashMTL(update_weights_every=0)
    with pytest.raises(ValueError, match="scale must be one of"):
        AlignedMTL(scale="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pref must be one of"):
        UPGrad(pref="median")  # type: ignore[arg-type]


# -- each paper's property ------------------------------------------------------------------


def simplex_grid(k: int, steps: int) -> torch.Tensor:
    pts = [c for c in itertools.product(range(steps + 1), repeat=k - 1) if sum(c) <= steps]
    w = torch.tensor([[*c, steps - sum(c)] for c in pts], dtype=torch.float64) / steps
    return w


@pytest.mark.parametrize("k", [2, 3, 6, 20])
def test_mgda_is_the_min_norm_point_and_meets_its_optimality_conditions(k):
    j = jac(k=k, p=30, seed=k)
    g = j @ j.T
    w = min_norm_weights(g)
    assert torch.all(w >= 0) and abs(float(w.sum()) - 1) < 1e-12
    d = w @ j
    # KKT: g_i . d >= ||d||^2 for every i, with equality on the support
    dots, norm2 = j @ d, d @ d
    assert torch.all(dots >= norm2 - 1e-9)
    assert torch.allclose(dots[w > 1e-9], norm2.expand(int((w > 1e-9).sum())), atol=1e-9)
    if k <= 3:  # no point of the simplex is shorter (grid search)
        grid = simplex_grid(k, 60)
        assert float(((grid @ j) ** 2).sum(1).min()) >= float(norm2) - 1e-12
    if k == 2:  # Sener & Koltun, Algorithm 1 (closed form for two tasks)
        g1, g2 = j
        gamma = ((g2 - g1) @ g2 / (g1 - g2).pow(2).sum()).clamp(0, 1)
        torch.testing.assert_close(d, gamma * g1 + (1 - gamma) * g2)


def test_mgda_direction_decreases_every_loss():
    j = jac(k=5, p=40)
    d = MGDA()(j)
    assert torch.all(j @ d > 0)


def test_pcgrad_two_tasks_do_not_conflict_after_projection():
    g1 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    g2 = torch.tensor([-1.0, 2.0, 0.5], dtype=torch.float64)
    j = torch.stack([g1, g2])
    d = PCGrad()(j, generator=gen())
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2
    p2 = g2 - (g2 @ g1) / (g1 @ g1) * g1
    torch.testing.assert_close(d, p1 + p2)
    assert p1 @ g2 >= -1e-12 and p2 @ g1 >= -1e-12
    # Gradients that do not conflict are left alone: the sum.
    j = torch.tensor([[1.0, 0.2], [0.5, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(PCGrad()(j, generator=gen()), j.sum(0))


def test_pcgrad_matches_algorithm_1_step_by_step():
    """The Gramian form against the paper's algorithm on vectors, with the same orders."""
    from manytask.mtl.aggregators.pcgrad import random_orders

    j = jac(k=5, p=6, seed=7)
    orders = random_orders(5, gen(11))
    out = []
    for i in range(5):
        g = j[i].clone()
        for jj in orders[i].tolist():
            dot = g @ j[jj]
            if dot < 0:
                g = g - dot / (j[jj] @ j[jj]) * j[jj]
        out.append(g)
    torch.testing.assert_close(PCGrad()(j, generator=gen(11)), torch.stack(out).sum(0))


def test_graddrop_keeps_one_sign_per_coordinate():
    j = jac(k=4, p=200)
    d = GradDrop()(j, generator=gen())
    pos = j.clamp_min(0).sum(0)
    neg = j.clamp_max(0).sum(0)
    agree = (j > 0).all(0) | (j < 0).all(0)
    ok = torch.isclose(d, pos) | torch.isclose(d, neg)
    assert ok.all()
    torch.testing.assert_close(d[agree], j.sum(0)[agree])
    # a full leak passes every gradient: the sum
    torch.testing.assert_close(GradDrop(leak=[1.0] * 4)(j, generator=gen()), j.sum(0))
    # the kept sign follows the purity P: with P = 1/2 (1 + sum g / sum |g|), E[d] =
    # P * pos + (1 - P) * neg; average over many draws
    j2 = torch.tensor([[2.0], [-1.0]], dtype=torch.float64)
    g = gen(5)
    draws = torch.stack([GradDrop()(j2, generator=g) for _ in range(4000)])
    purity = 0.5 * (1 + 1 / 3)
    assert abs(float(draws.mean()) - (purity * 2 + (1 - purity) * -1)) < 0.1


def test_cagrad_is_the_mean_at_c_zero_and_solves_its_dual():
    j = jac(k=3, p=10)
    torch.testing.assert_close(CAGrad(c=0.0)(j), j.mean(0))
    c = 0.5
    g0 = j.mean(0)
    d = CAGrad(c=c, rescale="none")(j)
    # d lies on the ball ||d - g0|| <= c ||g0|| (on its boundary) ...
    assert abs(float((d - g0).norm()) - c * float(g0.norm())) < 1e-6
    # ... and maximises the worst task's improvement over the ball: compare with a grid of
    # the dual (w over the simplex) and with directions sampled on the ball's surface.
    grid = simplex_grid(3, 120)
    gw = grid @ j
    dual = gw @ g0 + c * g0.norm() * gw.norm(dim=1)
    w_best = grid[dual.argmin()]
    gw_best = w_best @ j
    d_grid = g0 + c * g0.norm() / gw_best.norm() * gw_best
    assert (j @ d).min() >= (j @ d_grid).min() - 1e-3
    dirs = torch.randn(5000, 10, generator=gen(), dtype=torch.float64)
    ball = g0 + c * g0.norm() * dirs / dirs.norm(dim=1, keepdim=True)
    assert float((j @ d).min()) >= float((ball @ j.T).min(1).values.max()) - 1e-9
    # the rescaled versions
    torch.testing.assert_close(CAGrad(c=c)(j), d / (1 + c**2))
    torch.testing.assert_close(CAGrad(c=c, rescale="1+c")(j), d / (1 + c))


def test_imtl_g_projections_are_equal():
    for k in (2, 3, 5):
        j = jac(k=k, p=12, seed=k)
        d = IMTLG()(j)
        proj = j @ d / j.norm(dim=1)
        torch.testing.assert_close(proj, proj[:1].expand(k), atol=1e-10, rtol=1e-8)
        w, _ = IMTLG().weights(j @ j.T)
        assert abs(float(w.sum()) - 1) < 1e-10
        # the paper's closed form (eq. 6) for linearly independent gradients
        u = j / j.norm(dim=1, keepdim=True)
        dmat, umat = j[:1] - j[1:], u[:1] - u[1:]
        a_rest = j[0] @ umat.T @ torch.linalg.inv(dmat @ umat.T)
        a = torch.cat([1 - a_rest.sum(0, keepdim=True), a_rest])
        torch.testing.assert_close(w, a, atol=1e-8, rtol=1e-8)


def test_upgrad_conflicts_with_no_task_and_is_the_mean_without_conflicts():
    for seed in range(5):
        j = jac(k=6, p=8, seed=seed)
        d = UPGrad()(j)
        # (up to the solver's 1e-10 relative ridge)
        tol = 1e-8 * float((j @ j.T).abs().max())
        assert torch.all(j @ d >= -tol)
        # each projection lies in the dual cone
        v = dual_cone_weights(j @ j.T)
        proj = v @ j
        assert torch.all(proj @ j.T >= -tol)
        assert torch.all(v >= torch.eye(6, dtype=v.dtype) - 1e-12)
    j = torch.tensor([[1.0, 0.1], [0.2, 1.0], [1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(UPGrad()(j), j.mean(0))
    torch.testing.assert_close(UPGrad(pref="sum")(j), j.sum(0))


def test_nash_mtl_solves_the_bargaining_equations():
    j = jac(k=5, p=20)
    g = j @ j.T
    w, _ = NashMTL(max_norm=0.0).weights(g)
    assert torch.all(w > 0)
    torch.testing.assert_close(g @ w, 1 / w, atol=1e-8, rtol=1e-8)
    # every task's directional derivative is positive (g_i . d = 1 / a_i)
    d = NashMTL(max_norm=0.0)(j)
    torch.testing.assert_close(j @ d, 1 / w, atol=1e-8, rtol=1e-8)
    # clipping bounds the norm
    assert float(NashMTL(max_norm=0.1)(j).norm()) <= 0.1 + 1e-12


def test_nash_mtl_state_warm_start_and_update_period():
    agg = NashMTL(max_norm=0.0, update_weights_every=2)
    state = agg.init(3)
    j1, j2 = jac(k=3, seed=1), jac(k=3, seed=2)
    _d1, state = agg.update(j1, state)
    w1 = state["weights"].clone()
    d2, state = agg.update(j2, state)  # step 1: re-uses the weights of step 0
    torch.testing.assert_close(d2, w1 @ j2)
    assert state["step"] == 2
    _, state = agg.update(j2, state)  # step 2: new weights for j2
    g2 = j2 @ j2.T
    torch.testing.assert_close(g2 @ state["weights"], 1 / state["weights"])


def test_aligned_mtl_balances_the_jacobian():
    j = jac(k=4, p=9)
    g = j @ j.T
    b = balance_matrix(g, "min")
    lam = torch.linalg.eigvalsh(g)
    # B J has orthogonal rows of equal norm sigma_min: (B J)(B J)^T = B G B = lambda_min I
    torch.testing.assert_close(b @ g @ b, lam.min() * torch.eye(4, dtype=g.dtype))
    torch.testing.assert_close(AlignedMTL()(j), (b @ torch.ones(4, dtype=g.dtype)) @ j)
    # orthogonal gradients of equal norm are left as they are: the sum
    j = torch.tensor([[2.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(AlignedMTL()(j), j.sum(0))


def test_gradvac_targets_and_its_reduction_to_pcgrad():
    j = jac(k=4, p=6)
    torch.testing.assert_close(
        GradVac(beta=0.0)(j, generator=gen(2)), PCGrad()(j, generator=gen(2))
    )
    agg = GradVac(beta=0.5)
    state = agg.init(4)
    _, state = agg.update(j, state, generator=gen())
    phi = state["phi"]
    assert phi.shape == (4, 4) and torch.all(phi.diagonal() == 0)
    assert torch.any(phi != 0) and torch.all(phi.abs() <= 0.5 + 1e-12)
    # with a sampled subset of tasks only their pairs move
    sub = torch.tensor([1, 3])
    _, state2 = agg.update(j[sub], state, tasks=sub, generator=gen())
    changed = state2["phi"] != state["phi"]
    assert not changed[0].any() and not changed[:, 0].any() and changed[1, 3] and changed[3, 1]


# -- golden values ----------------------------------------------------------------------------

GOLDEN_J = torch.tensor([[1.0, 0.0, 2.0], [-1.0, 1.0, 0.0], [0.5, -2.0, 1.0]], dtype=torch.float64)


def test_golden_values():
    """Small Jacobians worked out by hand from each paper's formula."""
    j2 = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    # MGDA: min over the segment [(1,0), (0,2)] of the norm: a = (4/5, 1/5) -> (0.8, 0.4)
    torch.testing.assert_close(MGDA()(j2), torch.tensor([0.8, 0.4], dtype=torch.float64))
    # IMTL-G: projections equal on e1 and e2 -> d = (c, c) in the span with a1 + a2 = 1
    torch.testing.assert_close(IMTLG()(j2), torch.tensor([2 / 3, 2 / 3], dtype=torch.float64))
    # Nash-MTL: G = diag(1, 4), a_i^2 G_ii = 1 -> a = (1, 1/2), d = (1, 1)
    torch.testing.assert_close(
        NashMTL(max_norm=0)(j2), torch.tensor([1.0, 1.0], dtype=torch.float64)
    )
    # Aligned-MTL: singular values 1 and 2 -> both rows scaled to 1 -> d = (1, 1)
    torch.testing.assert_close(AlignedMTL()(j2), torch.tensor([1.0, 1.0], dtype=torch.float64))
    # No conflicts: PCGrad and UPGrad leave the rows alone
    torch.testing.assert_close(PCGrad()(j2, generator=gen()), j2.sum(0))
    torch.testing.assert_close(UPGrad()(j2), j2.mean(0))
    # PCGrad on GOLDEN_J row by row: g2 conflicts with g1 (dot -1) and g3 (dot -2.5), g1 . g3 = 2.5
    # g1 . g2 = -1: whatever the order, every projection below is computed by hand.
    d = PCGrad()(GOLDEN_J, generator=gen(0))
    from manytask.mtl.aggregators.pcgrad import random_orders

    orders = random_orders(3, gen(0)).tolist()
    rows = []
    for i in range(3):
        g = GOLDEN_J[i].clone()
        for jj in orders[i]:
            dot = float(g @ GOLDEN_J[jj])
            if dot < 0:
                g = g - dot / float(GOLDEN_J[jj] @ GOLDEN_J[jj]) * GOLDEN_J[jj]
        rows.append(g)
    torch.testing.assert_close(d, torch.stack(rows).sum(0))
    # UPGrad on two conflicting rows: ((1,0) -> (1/2,1/2), (-1,1) -> (0,1)) / 2
    torch.testing.assert_close(
        UPGrad()(torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)),
        torch.tensor([0.25, 0.75], dtype=torch.float64),
    )


# -- torchjd's definitions --------------------------------------------------------------------

torchjd = pytest.importorskip("torchjd.aggregation")


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


CASES = [jac(k=k, p=10, seed=s).float() for k, s in ((2, 0), (3, 1), (5, 2))]


@pytest.mark.parametrize("j", CASES, ids=["k2", "k3", "k5"])
def test_same_as_torchjd_deterministic(j):
    k = j.shape[0]
    pairs = [
        (Mean(), torchjd.Mean(), 1.0, 1e-6),
        (Sum(), torchjd.Sum(), 1.0, 1e-6),
        (IMTLG(), torchjd.IMTLG(), 1.0, 1e-4),
        (AlignedMTL(), torchjd.AlignedMTL(), k, 1e-4),  # torchjd's preference is the mean
        (MGDA(), torchjd.MGDA(epsilon=1e-7, max_iters=100000), 1.0, 1e-3),  # Frank-Wolfe
    ]
    if _has("qpsolvers"):
        pairs.append((UPGrad(), torchjd.UPGrad(), 1.0, 2e-3))  # torchjd adds a 1e-4 ridge
    if _has("cvxpy"):
        pairs.append((CAGrad(c=0.5, rescale="none"), torchjd.CAGrad(c=0.5), 1.0, 1e-3))
    for ours, theirs, factor, tol in pairs:
        torch.testing.assert_close(ours(j), factor * theirs(j), atol=tol, rtol=tol, msg=repr(ours))


def test_same_as_torchjd_randomised():
    j = CASES[0]  # two tasks: PCGrad's and GradVac's orders do not matter
    torch.testing.assert_close(PCGrad()(j, generator=gen()), torchjd.PCGrad()(j))
    torch.testing.assert_close(GradVac(beta=0.5)(j, generator=gen()), torchjd.GradVac(beta=0.5)(j))
    # GradDrop: the same uniform draws (global RNG seeded as our generator)
    j = CASES[2]
    torch.manual_seed(123)
    theirs = torchjd.GradDrop()(j)
    torch.testing.assert_close(GradDrop()(j, generator=gen(123)), theirs)


@pytest.mark.skipif(not _has("cvxpy"), reason="torchjd's Nash-MTL needs cvxpy")
@pytest.mark.filterwarnings("ignore:You are solving a parameterized problem")
def test_same_as_torchjd_nash_mtl():
    j = CASES[1]
    theirs = torchjd.NashMTL(n_tasks=3, max_norm=0.0, update_weights_every=1, optim_niter=200)
    # torchjd's solver stops at ||G a - 1/a|| < 1e-3 on the normalised Gramian
    torch.testing.assert_close(NashMTL(max_norm=0.0)(j), theirs(j), atol=5e-3, rtol=5e-3)
