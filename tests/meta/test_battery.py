"""The learner battery: every learner in ``manytask.registry.LEARNERS`` passes it unaided.

Each learner is built through :func:`manytask.train.build.build_learner`, with its
``tiny_args`` (a class attribute of :class:`~manytask.meta.MetaLearner`: arguments of a small
instance, ``{}`` by default) and a tiny encoder (Conv4 with 8 filters on 1x16x16 images; an MLP
of 16 units on scalar inputs for regression), for every problem it declares in ``problems``.
It must:

- give the documented output shape and finite values, forward and backward, for every
  (tasks, ways, shots, queries) of a small grid (learners with a fixed ``ways`` are built for
  each grid point's ways);
- send a finite gradient to every parameter, through its own ``outer_backward``;
- give identical parameters and outputs from the same seed, different parameters from another;
- keep the tasks of a batch apart in evaluation mode (permuting the tasks permutes the
  outputs; a task alone gets the predictions it gets in a batch);
- honour its ``order_invariant`` declaration: set learners give the same predictions when the
  support set is permuted (labels with it), sequence learners give different ones;
- train well above chance on a tiny problem in a few seconds;
- show its hyper-parameters in ``repr``;
- train through ``manytask run``, come back from ``manytask.load_run`` scoring the same, and
  resume a stopped run to the same weights and score.

A new learner needs nothing here: register it and run ``pytest tests/meta/test_battery.py``.
Regression predictions are ``[T, Q, out]``, or ``[T, Q, 2*out]`` for a learner whose
``regression_objective`` is ``"gaussian_nll"``.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import yaml
from torch import Tensor

import manytask
from manytask.cli import main
from manytask.config import load_config
from manytask.data import Episode, EpisodeSampler, FixedEpisodes, ImageStore, RegressionEpisode
from manytask.meta import MetaLearner
from manytask.objectives import Objective, get_objective
from manytask.registry import LEARNERS, TASKS
from manytask.train import RunContext, train
from manytask.train.build import build_learner
from manytask.train.evaluate import evaluate

IMAGE = (1, 16, 16)
IMAGE_ENCODER = ("conv4", {"hidden": 8})
POINT = (1,)
POINT_ENCODER = ("mlp", {"hidden": [16]})
INJECTED = ("encoder", "in_shape", "out_features")  # ways is a hyper-parameter worth showing

CASES = [
    pytest.param(name, problem, id=f"{name}-{problem[:5]}")
    for name in LEARNERS.names()
    for problem in getattr(LEARNERS.get(name), "problems", ("classification",))
]
CLASS_GRID = [(1, 2, 1, 1), (2, 3, 2, 2), (3, 5, 1, 3)]  # (tasks, ways, shots, queries)
REGRESSION_GRID = [(1, 1, 1), (2, 5, 3), (3, 10, 2)]  # (tasks, shots, queries)


# --- tiny problems -----------------------------------------------------------------------------


def glyph_store(classes: int = 40, instances: int = 8, seed: int = 0) -> ImageStore:
    """Random binary 16x16 glyphs, one per class, every instance the same glyph.

    The easiest few-shot problem there is: a query is a copy of its class's support image, so
    a learner solves it as soon as it learns to use the support set, and nothing else.
    """
    g = torch.Generator().manual_seed(seed)
    glyphs = torch.rand(classes, 1, *IMAGE[1:], generator=g) < 0.3
    images = glyphs.expand(-1, instances, -1, -1).to(torch.uint8) * 255
    return ImageStore(
        images=images,
        class_names=tuple(f"G/g{i}" for i in range(classes)),
        alphabets=("G",),
        alphabet_of=torch.zeros(classes, dtype=torch.long),
        drawers=torch.zeros(classes, instances, dtype=torch.long),
        source="battery glyphs",
    )


class Glyphs:
    """A classification task source of random glyphs: train on 30 classes, test on 10 others."""

    problem = "classification"
    in_shape = IMAGE
    out_features = None

    def __init__(self) -> None:
        store = glyph_store()
        self.parts = {"train": store.subset(range(30)), "val": store.subset(range(30, 40))}
        self.parts["test"] = self.parts["val"]

    def describe(self, part: str) -> str:
        return f"glyphs/{part}"

    def sampler(self, part, ways, shots, queries, tasks, *, seed, device=None):
        return EpisodeSampler(
            self.parts[part], ways, shots, queries, tasks, rotations=(0,), seed=seed, device=device
        )

    def fixed(self, part, ways, shots, queries, episodes, *, seed, batch_size, device=None):
        return FixedEpisodes(
            self.parts[part], ways, shots, queries, episodes, seed=seed, rotations=(0,),
            batch_size=batch_size, device=device,
        )  # fmt: skip


class LineSampler:
    """Tasks ``y = a x + b``, ``a ~ U[-2, 2]``, ``b ~ U[-1, 1]``, ``x ~ U[-1, 1]``: resumable."""

    def __init__(self, shots: int, queries: int, tasks: int, seed: int) -> None:
        self.shots, self.queries, self.tasks = shots, queries, tasks
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self, tasks: int) -> RegressionEpisode:
        g = self.generator
        a = torch.rand(tasks, 1, 1, generator=g) * 4 - 2
        b = torch.rand(tasks, 1, 1, generator=g) * 2 - 1
        x = torch.rand(tasks, self.shots + self.queries, 1, generator=g) * 2 - 1
        y = a * x + b
        k = self.shots
        return RegressionEpisode(x[:, :k], y[:, :k], x[:, k:], y[:, k:], torch.cat([a, b], 1))

    def sample(self) -> RegressionEpisode:
        return self.draw(self.tasks)

    def state_dict(self) -> dict[str, Any]:
        return {"generator_state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator_state"])


class FixedLines(list):  # type: ignore[type-arg]
    def __init__(self, episodes: int, shots: int, queries: int, seed: int, batch: int) -> None:
        s = LineSampler(shots, queries, 1, seed)
        super().__init__(s.draw(min(batch, episodes - i)) for i in range(0, episodes, batch))
        self.num_episodes = episodes


class Lines:
    """A regression task source: lines through noise-free points."""

    problem = "regression"
    in_shape = POINT
    out_features = 1

    def describe(self, part: str) -> str:
        return f"lines/{part}"

    def sampler(self, part, ways, shots, queries, tasks, *, seed, device=None):
        return LineSampler(shots, queries, tasks, seed)

    def fixed(self, part, ways, shots, queries, episodes, *, seed, batch_size, device=None):
        return FixedLines(episodes, shots, queries, seed + 10_000, batch_size)


SOURCES = {"classification": "battery-glyphs", "regression": "battery-lines"}


@pytest.fixture(scope="module", autouse=True)
def battery_sources() -> Iterator[None]:
    TASKS.add(SOURCES["classification"], Glyphs)
    TASKS.add(SOURCES["regression"], Lines)
    yield
    TASKS.remove(SOURCES["classification"])
    TASKS.remove(SOURCES["regression"])


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one intra-op thread (and do not fight a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- helpers -----------------------------------------------------------------------------------


def tiny_args(name: str) -> dict[str, Any]:
    """The learner's ``tiny_args``, as a recipe would write them (lists, not tuples)."""
    args = getattr(LEARNERS.get(name), "tiny_args", {})
    return {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}


def encoder_of(name: str, problem: str) -> tuple[str | None, dict[str, Any]]:
    if not LEARNERS.takes(name, "encoder"):
        return None, {}
    enc, args = IMAGE_ENCODER if problem == "classification" else POINT_ENCODER
    return enc, dict(args)


def build(name: str, problem: str, ways: int | None = None, seed: int = 0) -> MetaLearner:
    encoder, encoder_args = encoder_of(name, problem)
    learner: MetaLearner = build_learner(
        name, tiny_args(name), encoder, encoder_args,
        in_shape=IMAGE if problem == "classification" else POINT,
        ways=ways if problem == "classification" else None,
        out_features=1 if problem == "regression" else None,
        seed=seed,
    )  # fmt: skip
    return learner


def objective_of(learner: MetaLearner, problem: str) -> Objective:
    if problem == "classification":
        return get_objective("classification")
    return get_objective(getattr(learner, "regression_objective", "regression"))


def width_of(learner: MetaLearner) -> int:
    """Values per regression target: 2 for a Gaussian head (mean, scale), else 1."""
    return 2 if getattr(learner, "regression_objective", "regression") == "gaussian_nll" else 1


def random_batch(
    problem: str, shape: tuple[int, ...], seed: int = 0
) -> Episode | RegressionEpisode:
    """A batch of random inputs: labels each ``shots`` times per task, in a shuffled order."""
    g = torch.Generator().manual_seed(seed)
    if problem == "classification":
        t, n, k, q = shape
        sy = torch.stack([torch.randperm(n * k, generator=g) % n for _ in range(t)])
        qy = torch.stack([torch.randperm(n * q, generator=g) % n for _ in range(t)])
        return Episode(
            support_x=torch.rand(t, n * k, *IMAGE, generator=g),
            support_y=sy,
            query_x=torch.rand(t, n * q, *IMAGE, generator=g),
            query_y=qy,
            classes=torch.arange(n).repeat(t, 1),
        )
    t, k, q = shape
    x = torch.rand(t, k + q, 1, generator=g) * 2 - 1
    y = torch.randn(t, k + q, 1, generator=g)
    return RegressionEpisode(x[:, :k], y[:, :k], x[:, k:], y[:, k:], torch.zeros(t, 2))


def predict(learner: MetaLearner, b: Episode | RegressionEpisode) -> Tensor:
    out: Tensor = learner(b.support_x, b.support_y, b.query_x, ways=b.ways)
    return out


def grid(problem: str) -> list[tuple[int, ...]]:
    return list(CLASS_GRID if problem == "classification" else REGRESSION_GRID)


def ways_of(problem: str, shape: tuple[int, ...]) -> int | None:
    return shape[1] if problem == "classification" else None


def a_batch(problem: str, seed: int = 0) -> Episode | RegressionEpisode:
    """The battery's middle-sized batch: 3 tasks, 3-way 2-shot 2 queries (or 5-shot 4 points)."""
    return random_batch(problem, (3, 3, 2, 2) if problem == "classification" else (3, 5, 4), seed)


# --- the battery -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "problem"), CASES)
def test_shapes_finite_forward_and_backward(name: str, problem: str) -> None:
    for shape in grid(problem):
        learner = build(name, problem, ways_of(problem, shape))
        b = random_batch(problem, shape)
        pred = predict(learner, b)
        t = shape[0]
        if problem == "classification":
            _, n, _, q = shape
            expected: tuple[int, ...] = (t, n * q, n)
        else:
            expected = (t, shape[2], width_of(learner))
        assert tuple(pred.shape) == expected, f"{name} {shape}: {tuple(pred.shape)}"
        assert pred.dtype == torch.float32 and bool(torch.isfinite(pred).all()), name
        loss = objective_of(learner, problem).loss(pred, b.query_y)
        learner.zero_grad(set_to_none=True)
        learner.outer_backward(loss)
        grads = [p.grad for p in learner.parameters() if p.requires_grad]
        assert all(gr is None or bool(torch.isfinite(gr).all()) for gr in grads), name


def _biases_removed_by_batch_norm(model: torch.nn.Module) -> set[str]:
    """Biases of convolutions followed by a batch norm: batch statistics subtract them again,
    so their exact gradient is zero (the first-layer stem of meta/_stem.py returns exactly
    that; the layers one at a time return rounding noise)."""
    out = set()
    for prefix, mod in model.named_modules():
        children = list(mod.named_children())
        for (name, a), (_, b) in itertools.pairwise(children):
            conv_then_norm = isinstance(a, torch.nn.Conv2d) and isinstance(b, torch.nn.BatchNorm2d)
            if conv_then_norm and a.bias is not None:
                out.add(f"{prefix}.{name}.bias" if prefix else f"{name}.bias")
    if hasattr(model, "inner_lrs"):  # Meta-SGD: the rate of such a bias has a zero gradient too
        theta = list(model.named_theta())
        out |= {f"inner_lrs.{i}" for i, n in enumerate(theta) if n in out}
    return out


@pytest.mark.parametrize(("name", "problem"), CASES)
def test_gradients_reach_every_parameter(name: str, problem: str) -> None:
    shape = grid(problem)[1]
    learner = build(name, problem, ways_of(problem, shape))
    b = random_batch(problem, shape, seed=1)
    loss = objective_of(learner, problem).loss(predict(learner, b), b.query_y)
    learner.zero_grad(set_to_none=True)
    learner.outer_backward(loss)
    missing, zero = [], []
    removed = _biases_removed_by_batch_norm(learner)
    for pname, p in learner.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            missing.append(pname)
        elif not bool(p.grad.any()) and pname not in removed:
            zero.append(pname)
        else:
            assert bool(torch.isfinite(p.grad).all()), pname
    assert not missing, f"{name}: no gradient reaches {missing}"
    assert not zero, f"{name}: an all-zero gradient for {zero}"


@pytest.mark.parametrize(("name", "problem"), CASES)
def test_same_seed_same_model_other_seed_other_model(name: str, problem: str) -> None:
    ways = 3 if problem == "classification" else None
    a, b, c = (build(name, problem, ways, seed=s) for s in (0, 0, 1))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), f"{name}: same seed, other weights"
    floats = [k for k in sa if sa[k].is_floating_point() and sa[k].numel() > 1]
    assert any(not torch.equal(sa[k], sc[k]) for k in floats), f"{name}: seed ignored"
    batch = a_batch(problem)
    for mode in (True, False):
        a.train(mode)
        b.train(mode)
        assert torch.equal(predict(a, batch), predict(b, batch)), f"{name} train={mode}"


@pytest.mark.parametrize(("name", "problem"), CASES)
def test_tasks_do_not_leak_into_each_other(name: str, problem: str) -> None:
    ways = 3 if problem == "classification" else None
    learner = build(name, problem, ways).eval()
    b = a_batch(problem, seed=2)
    out = predict(learner, b)
    perm = torch.tensor([2, 0, 1])
    permuted = type(b)(*(getattr(b, f)[perm] for f in b.__dataclass_fields__))
    torch.testing.assert_close(predict(learner, permuted), out[perm], rtol=1e-4, atol=1e-5)
    for i in range(b.tasks):
        alone = type(b)(*(getattr(b, f)[i : i + 1] for f in b.__dataclass_fields__))
        torch.testing.assert_close(predict(learner, alone), out[i : i + 1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("name", "problem"), CASES)
def test_support_order_as_declared(name: str, problem: str) -> None:
    cls = LEARNERS.get(name)
    assert isinstance(getattr(cls, "order_invariant", None), bool), (
        f"{name} must declare order_invariant (True or False)"
    )
    ways = 3 if problem == "classification" else None
    learner = build(name, problem, ways).eval()
    b = a_batch(problem, seed=3)
    out = predict(learner, b)
    g = torch.Generator().manual_seed(0)
    n = b.support_x.shape[1]
    perms = torch.stack([torch.randperm(n, generator=g) for _ in range(b.tasks)])
    rows = torch.arange(b.tasks)[:, None]
    shuffled = predict(learner, type(b)(
        b.support_x[rows, perms], b.support_y[rows, perms], b.query_x, b.query_y,
        *(getattr(b, f) for f in list(b.__dataclass_fields__)[4:]),
    ))  # fmt: skip
    # The built learner's own declaration: an option may change it (MatchingNet with fce).
    assert isinstance(learner.order_invariant, bool)
    if learner.order_invariant:
        torch.testing.assert_close(shuffled, out, rtol=1e-4, atol=1e-5)
    else:
        assert not torch.allclose(shuffled, out, rtol=1e-4, atol=1e-5), (
            f"{name} declares order_invariant=False but ignores the order of the support set"
        )


def _fit(
    learner: MetaLearner, problem: str, *, steps: int, lr: float, target: float
) -> tuple[float, int]:
    """Meta-train on the tiny problem until the test metric reaches ``target``."""
    source = Glyphs() if problem == "classification" else Lines()
    if problem == "classification":
        sampler: Any = source.sampler("train", 2, 1, 3, 8, seed=0)
        test: Any = source.fixed("test", 2, 1, 5, 40, seed=1, batch_size=40)
    else:
        sampler = source.sampler("train", 0, 5, 5, 8, seed=0)
        test = source.fixed("test", 0, 5, 10, 40, seed=1, batch_size=40)
    objective = objective_of(learner, problem)
    opt = torch.optim.Adam(learner.parameters(), lr=lr)
    score = evaluate(learner, test, objective, progress=False).mean
    step = 0
    while not objective.better(score, target) and step < steps:
        for _ in range(25):
            b = sampler.sample()
            loss = objective.loss(predict(learner, b), b.query_y)
            opt.zero_grad(set_to_none=True)
            learner.outer_backward(loss)
            opt.step()
        step += 25
        score = evaluate(learner, test, objective, progress=False).mean
    return score, step


@pytest.mark.parametrize(("name", "problem"), CASES)
def test_trains_well_above_chance_in_seconds(name: str, problem: str) -> None:
    # 2-way 1-shot glyphs (chance 50%) must reach 75%. Lines: predicting y = 0 scores an MSE of
    # E[(ax + b)^2] = 4/9 + 1/3 = 0.78, the mean of the 5 support targets E[a^2] Var(x) 6/5
    # = 0.53; an MSE of 0.4 needs the slope read from the support set.
    learner = build(name, problem, 2 if problem == "classification" else None)
    target = 75.0 if problem == "classification" else 0.4
    t0 = time.perf_counter()
    score, steps = _fit(learner, problem, steps=400, lr=5e-3, target=target)
    spent = time.perf_counter() - t0
    better = score > target if problem == "classification" else score < target
    assert better, f"{name}: {score:.3g} after {steps} steps ({spent:.1f} s), target {target}"


@pytest.mark.parametrize(("name", "problem"), CASES)
def test_repr_shows_hyper_parameters(name: str, problem: str) -> None:
    learner = build(name, problem, 3 if problem == "classification" else None)
    text = repr(learner)
    shown = [a.name for a in LEARNERS.arguments(name) if a.name not in INJECTED]
    if problem == "regression":
        shown = [a for a in shown if a != "ways"]
    missing = [a for a in shown if f"{a}=" not in text]
    assert not missing, f"{name}: repr does not show {missing}:\n{text}"


@pytest.mark.parametrize(("name", "problem"), CASES)
def test_cli_run_then_load_run_scores_the_same(name: str, problem: str, tmp_path) -> None:
    encoder, encoder_args = encoder_of(name, problem)
    shape = {"ways": 3, "shots": 1, "queries": 2} if problem == "classification" else {
        "shots": 4, "queries": 3
    }  # fmt: skip
    recipe = {
        "family": "meta", "name": f"battery-{name}", "seed": 3,
        "data": {"dataset": SOURCES[problem]},
        "model": {"learner": name, "args": tiny_args(name), "encoder": encoder,
                  "encoder_args": encoder_args},
        "train": {"episodes": 4, "episode": {**shape, "tasks": 2}, "log_every": 2,
                  "checkpoint_every": 2, "val_every": 0},
        "eval": {"episode": shape, "episodes": 6, "batch_size": 4},
        "device": "cpu", "quiet": True,
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["learner"] == name and results["test"]["tasks"] == 6
    learner = manytask.load_run(out)
    assert type(learner) is LEARNERS.get(name) and not learner.training
    score, _, _ = manytask.train.evaluate_run(out, ["quiet=true"])
    assert score.mean == pytest.approx(results["test"]["mean"], rel=1e-6, abs=1e-9)
    # Stopped after 2 steps and resumed, the same run ends with the same weights and score.
    cfg = load_config(path)
    ctx = RunContext(torch.device("cpu"), progress=False)
    assert train(cfg, tmp_path / "split", ctx, stop_after=2) is None
    resumed = train(cfg, tmp_path / "split", ctx, resume=True)
    assert resumed is not None and resumed.test.mean == results["test"]["mean"]
    split = manytask.load_run(tmp_path / "split").state_dict()
    assert all(torch.equal(v, split[k]) for k, v in learner.state_dict().items())
