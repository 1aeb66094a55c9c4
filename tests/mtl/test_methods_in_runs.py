"""Issue 9's methods inside `manytask run`: chosen by name with typed arguments, the
one-backward Jacobian in the trainer's step, bit-identical resume, conflict in the report."""

from __future__ import annotations

import pytest
import torch

from manytask.config import ConfigError, load_config
from manytask.data import registry as data_registry
from manytask.data.multitask import MultiTaskData, TaskData, TaskSpec
from manytask.mtl import jacobian as jacobian_module
from manytask.train import RunContext, RunDir, train

CTX = RunContext(device=torch.device("cpu"), progress=False)


def load_toy(data_dir=None, *, seed: int = 0, n: int = 48) -> MultiTaskData:
    """Three tasks of three kinds, each with its own inputs (3-way, binary, 2-d regression)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3, 6, 3, generator=g)

    def part(i: int, rows: int) -> TaskData:
        x = torch.randn(rows, 6, generator=g) + i
        z = x @ w[i]
        return TaskData(x, (z.argmax(1), (z[:, 0] > 0).float(), z[:, :2])[i])

    specs = (
        TaskSpec("digit", "multiclass", 3),
        TaskSpec("odd", "binary", 1),
        TaskSpec("pos", "regression", 2),
    )
    splits = [tuple(part(i, rows) for i in range(3)) for rows in (n, n // 2, n // 2)]
    return MultiTaskData("toy3g", specs, *splits, input_shape=(6,), shared_inputs=False)


@pytest.fixture
def toy(monkeypatch):
    info = data_registry.DatasetInfo("toy3g", "three kinds of task (test)", load_toy)
    monkeypatch.setitem(data_registry.DATASETS, "toy3g", info)
    return info


def config(method: str, *overrides: str):
    raw = {
        "family": "mtl",
        "name": "toy",
        "device": "cpu",
        "quiet": True,
        "data": {"dataset": "toy3g"},
        "model": {"conditioning": "multi_head", "backbone_args": {"hidden": [16]}},
        "method": {"name": method},
        "train": {
            "steps": 8,
            "batch_size": 8,
            "tasks_per_step": 2,
            "log_every": 2,
            "checkpoint_every": 3,
            "val_every": 4,
            "optim": {"lr": 0.01},
        },
    }
    return load_config(raw, list(overrides))


def test_methods_are_chosen_by_name_with_typed_arguments(toy):
    cfg = config("cagrad", "method.args.c=5e-1", "method.args.rescale=1+c")
    assert cfg.method.args == {"c": 0.5, "rescale": "1+c", "jacobian": "auto"}
    with pytest.raises(ConfigError, match="Did you mean 'pcgrad'"):
        config("pcgrd")
    with pytest.raises(ConfigError, match="Valid arguments"):
        config("nash_mtl", "method.args.maxnorm=2")
    with pytest.raises(ConfigError, match="rescale"):
        config("cagrad", "method.args.rescale=twice")
    with pytest.raises(ConfigError, match="beta"):
        config("gradvac", "method.args.beta=3")


def test_the_trainer_gets_the_jacobian_from_one_backward(tmp_path, toy, monkeypatch):
    paths = []
    original = jacobian_module.TaskCapture.jacobian

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        paths.append(self.last_path)
        return out

    monkeypatch.setattr(jacobian_module.TaskCapture, "jacobian", spy)
    result = train(config("upgrad"), tmp_path / "run", CTX)
    assert result is not None
    assert paths and set(paths) == {"segments"}
    results = RunDir(tmp_path / "run").read_json("results.json")
    cos = results["gradient_conflict"]["mean_cosine"]
    assert len(cos) == 3 and all(abs(cos[i][i] - 1) < 1e-4 for i in range(3))
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Gradient conflict" in report
    assert (tmp_path / "run" / "gradient_conflict.png").stat().st_size > 1000
    assert (tmp_path / "run" / "gradient_conflict_curve.png").exists()


@pytest.mark.parametrize(
    "method",
    [
        "gradvac",  # randomised, with memory
        "famo",  # reads the losses after the step
        pytest.param("nash_mtl", marks=pytest.mark.slow),
        pytest.param("uncertainty", marks=pytest.mark.slow),
    ],
)
def test_stop_and_resume_is_bit_identical(tmp_path, toy, method):
    cfg = config(method)
    assert train(cfg, tmp_path / "full", CTX) is not None
    assert train(cfg, tmp_path / "split", CTX, stop_after=4) is None  # between checkpoints
    assert train(cfg, tmp_path / "split", CTX, resume=True) is not None
    a = torch.load(RunDir(tmp_path / "full").final_weights, weights_only=True)
    b = torch.load(RunDir(tmp_path / "split").final_weights, weights_only=True)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    ra = RunDir(tmp_path / "full").read_json("results.json")
    rb = RunDir(tmp_path / "split").read_json("results.json")
    assert ra["test"] == rb["test"]
