"""The spine's seams, each used by a toy part registered here (no edit of the loop or config).

- a regression task source and a regression learner train and evaluate end to end through
  ``manytask run``, reporting MSE with its 95% CI;
- a learner with its own outer update (``outer_backward``) is trained by the same loop;
- a run folder with ``writer=False`` is never written;
- a run written by manytask 0.1.0 (schema 1, checkpoint format 1) still loads.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
import yaml
from torch import Tensor, nn

import manytask
from manytask.cli import main
from manytask.config import load_config
from manytask.data import RegressionEpisode
from manytask.meta import MetaLearner, check_task_batch
from manytask.nn import output_features
from manytask.registry import LEARNERS, TASKS
from manytask.train import RunContext, RunDir, train


class LineSampler:
    """Tasks ``y = a x + b`` with ``a ~ U[-2, 2]``, ``b ~ U[-1, 1]``, ``x ~ U[-1, 1]``."""

    def __init__(self, shots: int, queries: int, tasks: int, seed: int, device: Any) -> None:
        self.shots, self.queries, self.tasks, self.device = shots, queries, tasks, device
        self.generator = torch.Generator().manual_seed(seed)

    def _draw(self, tasks: int) -> RegressionEpisode:
        g = self.generator
        ab = torch.rand(tasks, 2, generator=g) * torch.tensor([4.0, 2.0]) - torch.tensor([2.0, 1.0])
        x = torch.rand(tasks, self.shots + self.queries, 1, generator=g) * 2 - 1
        y = ab[:, :1, None] * x + ab[:, 1:, None]
        k = self.shots
        return RegressionEpisode(x[:, :k], y[:, :k], x[:, k:], y[:, k:], ab).to(self.device)

    def sample(self) -> RegressionEpisode:
        return self._draw(self.tasks)

    def state_dict(self) -> dict[str, Any]:
        return {"generator_state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator_state"])


class FixedLines:
    def __init__(self, sampler: LineSampler, episodes: int, batch_size: int) -> None:
        self.num_episodes = episodes
        self.batches = [
            sampler._draw(min(batch_size, episodes - s)) for s in range(0, episodes, batch_size)
        ]

    def __iter__(self):
        return iter(self.batches)


class Lines:
    """A toy regression task source (registered by the test as ``lines``)."""

    problem = "regression"
    in_shape = (1,)
    out_features = 1

    def __init__(self, noise: float = 0.0) -> None:
        self.noise = noise

    def describe(self, part: str) -> str:
        return f"lines/{part}"

    def sampler(self, part, ways, shots, queries, tasks, *, seed, device=None):
        return LineSampler(shots, queries, tasks, seed, device)

    def fixed(self, part, ways, shots, queries, episodes, *, seed, batch_size, device=None):
        return FixedLines(LineSampler(shots, queries, 1, seed + 1000, device), episodes, batch_size)


class RidgeFeatures(MetaLearner):
    """Ridge regression on learned features of the support set, per task, in closed form."""

    problems = ("regression",)

    def __init__(
        self, encoder: nn.Module, in_shape: tuple[int, ...], out_features: int, ridge: float = 0.1
    ) -> None:
        super().__init__()
        self.encoder, self.ridge = encoder, ridge
        width = output_features(encoder, in_shape)
        self.proj = nn.Linear(width, 8)

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways=None) -> Tensor:
        check_task_batch(support_x, support_y, query_x)
        t, k = support_x.shape[:2]
        f = self.proj(self.encoder(torch.cat([support_x, query_x], 1).flatten(0, 1)))
        f = torch.cat([f, torch.ones_like(f[:, :1])], -1).view(t, -1, 9)
        fs, fq = f[:, :k], f[:, k:]
        gram = fs.transpose(1, 2) @ fs + self.ridge * torch.eye(9)
        w = torch.linalg.solve(gram, fs.transpose(1, 2) @ support_y)
        return fq @ w


@pytest.fixture
def toy_regression():
    TASKS.add("lines", Lines)
    LEARNERS.add("ridge", RidgeFeatures)
    yield
    TASKS.remove("lines")
    LEARNERS.remove("ridge")


def _lines_recipe(tmp_path, **train: Any) -> Any:
    recipe = {
        "family": "meta",
        "name": "toy-lines",
        "data": {"dataset": "lines"},
        "model": {"learner": "ridge", "encoder": "mlp", "encoder_args": {"hidden": [16]}},
        "train": {
            "episodes": 60, "episode": {"shots": 5, "queries": 10, "tasks": 8},
            "optim": {"lr": 1e-2}, "log_every": 10, "checkpoint_every": 20,
            "val_every": 30, "val_episodes": 20, **train,
        },
        "eval": {"episode": {"shots": 5, "queries": 10}, "episodes": 100, "batch_size": 32},
        "device": "cpu",
        "quiet": True,
    }  # fmt: skip
    path = tmp_path / "lines.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_regression_learner_trains_and_reports_mse(tmp_path, capsys, toy_regression):
    recipe = _lines_recipe(tmp_path)
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "5-shot test MSE" in printed and "+-" in printed and "95% CI, 100 tasks" in printed
    results = json.loads((out / "results.json").read_text())
    test = results["test"]
    assert test["metric"] == "mse" and test["higher_is_better"] is False
    assert test["tasks"] == 100 and test["ci95"] > 0
    assert results["objective"] == "regression"
    # It learned: far below the MSE of predicting 0 (E[(ax+b)^2] = 4/9 + 1/3 ~ 0.78).
    assert test["mean"] < 0.1
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "mse"} <= set(next(r for r in records if r["split"] == "train"))
    val = [r for r in records if r["split"] == "val"]
    assert val and val[0]["metric"] == "mse"
    report = (out / "report.md").read_text()
    assert "test MSE (lower is better)" in report
    assert (out / "learning_curves.png").is_file() and (out / "test_metric.png").is_file()
    # ways never appears in a regression config.
    with pytest.raises(manytask.config.ConfigError, match="regression tasks have no classes"):
        load_config(recipe, ["train.episode.ways=5"])
    # Given back by load_run, it scores the same.
    learner = manytask.load_run(out)
    score, _, _ = manytask.train.evaluate_run(out, ["quiet=true"])
    assert score.mean == pytest.approx(test["mean"], rel=1e-6)
    assert isinstance(learner, RidgeFeatures)


class ConstantStep(MetaLearner):
    """A learner whose outer update is its own: every gradient is 1, whatever the loss."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.calls = 0

    def forward(self, support_x, support_y, query_x, ways=None):
        z = self.encoder(query_x.flatten(0, 1))
        return z[:, :ways].reshape(*query_x.shape[:2], ways)

    def outer_backward(self, loss: Tensor) -> None:
        self.calls += 1
        for p in self.parameters():
            p.grad = torch.ones_like(p)


def test_the_loop_calls_the_learners_outer_update(tmp_path, tiny_overrides):
    LEARNERS.add("constant-step", ConstantStep)
    try:
        cfg = load_config(
            manytask.recipes.recipe_path("omniglot/protonet-5w1s"),
            [*tiny_overrides, "model.learner=constant-step", "train.optim.optimizer=sgd",
             "train.optim.lr=0.5", "train.optim.schedule=constant", "train.val_every=0"],
        )  # fmt: skip
        from manytask.train.meta import setup

        ctx = RunContext(device=torch.device("cpu"), progress=False)
        before = {k: v.clone() for k, v in setup(cfg, ctx).learner.state_dict().items()}
        result = train(cfg, tmp_path / "r", ctx)
        assert result is not None
        after = manytask.load_run(tmp_path / "r").state_dict()
        for name, w in before.items():
            if w.is_floating_point() and "running" not in name:
                assert torch.allclose(after[name], w - 0.5 * 6), name  # 6 steps of SGD on 1s
    finally:
        LEARNERS.remove("constant-step")


def test_a_non_writer_process_writes_nothing(tmp_path, tiny_overrides):
    cfg = load_config(manytask.recipes.recipe_path("omniglot/protonet-5w1s"), tiny_overrides)
    ctx = RunContext(device=torch.device("cpu"), progress=False, rank=1, world_size=2)
    result = train(cfg, tmp_path / "r", ctx)
    assert result is not None and result.test.n == 8
    assert not (tmp_path / "r").exists()


def test_a_run_from_manytask_0_1_0_still_loads(tmp_path):
    # The layout 0.1.0 wrote: no schema key, model.hidden, eval.episode.tasks, and a
    # checkpoint of format 1 with the learner at the top level.
    run = tmp_path / "old"
    (run / "checkpoints").mkdir(parents=True)
    old_config = {
        "name": "omniglot-protonet-5w1s-quick", "description": "", "seed": 0,
        "device": "auto", "quiet": False,
        "data": {"dataset": "omniglot", "image_size": 28, "source": "embedded",
                 "split": "vinyals", "train_part": "train", "val_part": "val",
                 "test_part": "test", "rotations": [0, 90, 180, 270], "group_by": "none"},
        "model": {"learner": "protonet", "encoder": "conv4", "hidden": 8},
        "train": {"episodes": 6, "episode": {"ways": 5, "shots": 1, "queries": 2, "tasks": 1},
                  "optim": {"lr": 0.002, "weight_decay": 0.0, "step_size": 700, "gamma": 0.5},
                  "precision": "bf16", "log_every": 50, "checkpoint_every": 200,
                  "val_every": 700, "val_episodes": 200},
        "eval": {"episode": {"ways": 5, "shots": 1, "queries": 15, "tasks": 1},
                 "episodes": 10, "seed": 0, "batch_size": 25},
    }  # fmt: skip
    (run / "config.yaml").write_text(yaml.safe_dump(old_config, sort_keys=False))
    from manytask.meta import ProtoNet
    from manytask.nn import Conv4, init_parameters

    weights = init_parameters(ProtoNet(Conv4(hidden=8)), 3).state_dict()
    torch.save(
        {"version": 1, "step": 6, "elapsed_s": 1.0, "learner": weights,
         "window": {"loss": 0.0, "acc": 0.0, "count": 0}},
        run / "checkpoints" / "last.pt",
    )  # fmt: skip
    learner = manytask.load_run(run)
    for k, v in weights.items():
        assert torch.equal(learner.state_dict()[k], v)
    assert main(["eval", str(run), "--quiet"]) == 0
    # Resuming it says plainly what happened and what to do.
    with pytest.raises(manytask.typed.ManytaskError, match=r"format 1.*start a new run"):
        train(load_config(old_config), RunDir(run), RunContext(torch.device("cpu")), resume=True)
    assert math.isfinite(json.loads(next(run.glob("eval-*.json")).read_text())["mean"])
