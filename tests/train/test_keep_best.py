"""``train.keep: best``: a run ends with (tests and saves) its best validation's weights."""

import dataclasses
import math

import pytest
import torch

import manytask.train.meta as meta_train
from manytask.cli import main
from manytask.config import load_config
from manytask.objectives import get_objective
from manytask.recipes import recipe_path
from manytask.train import RunDir, load_run, train
from manytask.train.evaluate import evaluate
from manytask.train.loop import Best
from manytask.typed import ConfigError


def test_best_keeps_strict_improvements_in_the_metric_direction():
    saved = []
    up = Best(get_objective("classification").better)  # accuracy: higher is better
    assert up.offer(1, 50.0, lambda: saved.append(1))
    assert not up.offer(2, 50.0, lambda: saved.append(2))  # a tie is not better
    assert not up.offer(3, float("nan"), lambda: saved.append(3))
    assert up.offer(4, 60.0, lambda: saved.append(4))
    assert not up.offer(5, 55.0, lambda: saved.append(5))
    assert saved == [1, 4] and (up.step, up.value) == (4, 60.0)

    down = Best(get_objective("regression").better)  # MSE: lower is better
    for step, value in enumerate([0.5, 0.7, 0.2, 0.3]):
        down.offer(step, value, lambda: None)
    assert (down.step, down.value) == (2, 0.2)

    again = Best(get_objective("regression").better)
    again.load_state_dict(down.state_dict())
    assert (again.step, again.value) == (2, 0.2)
    assert not again.offer(9, 0.25, lambda: None)


@pytest.mark.parametrize(
    "overrides, says",
    [
        (["train.keep=best", "train.val_every=0"], "turns validation off"),
        (["train.keep=bset"], "train.keep"),
    ],
)
def test_keep_best_without_validation_fails_at_load(tiny_overrides, overrides, says):
    with pytest.raises(ConfigError, match=says):
        load_config(recipe_path("omniglot/protonet-5w1s"), [*tiny_overrides, *overrides])


def test_keep_best_error_on_the_command_line(tmp_path, tiny_overrides, capsys):
    out = tmp_path / "run"
    args = ["run", "omniglot/protonet-5w1s", *tiny_overrides]
    assert main([*args, "train.keep=best", "train.val_every=0", "--out", str(out)]) == 2
    assert "train.val_every" in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture
def scripted_validation(monkeypatch):
    """Validation reports 90% at its first call and 10% after: the best is the first one."""
    calls = []

    def fake(learner, tasks, objective, *args, **kwargs):
        score = evaluate(learner, tasks, objective, *args, **kwargs)
        if kwargs.get("desc") == "test":
            return score
        calls.append(len(calls))
        return dataclasses.replace(score, mean=90.0 if len(calls) == 1 else 10.0)

    monkeypatch.setattr(meta_train, "evaluate", fake)
    return calls


def _weights_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_ends_with_its_best_validation_weights(tmp_path, tiny_overrides, scripted_validation):
    cfg = load_config(recipe_path("omniglot/protonet-5w1s"), [*tiny_overrides, "train.keep=best"])
    result = train(cfg, tmp_path / "run")
    assert result is not None and len(scripted_validation) == 2  # at steps 3 and 6
    run = RunDir(tmp_path / "run")
    assert result.results["kept"] == {"weights": "best", "step": 3, "val": 90.0}
    assert run.read_json("results.json")["kept"]["step"] == 3
    best = run.load_checkpoint(run.best_weights)["learner"]
    final = run.load_checkpoint(run.final_weights)["learner"]
    last = run.load_checkpoint()["parts"]["learner"]
    assert _weights_equal(final, best)
    assert not _weights_equal(final, last)  # three more steps moved the weights
    val = [r for r in run.metrics() if r["split"] == "val"]
    assert [r.get("best", False) for r in val] == [True, False]
    assert "best validation" in (run.path / "report.md").read_text()
    # What is saved is what was tested: load_run + evaluate gives the same test score.
    loaded = load_run(run.path)
    again = evaluate(loaded, meta_train.test_tasks(cfg, cfg.source(), torch.device("cpu")),
                     meta_train.get_objective(cfg.objective), progress=False)  # fmt: skip
    assert math.isclose(again.mean, result.test.mean)


def test_keep_best_resumes_to_the_same_run(tmp_path, tiny_overrides, scripted_validation):
    cfg = load_config(recipe_path("omniglot/protonet-5w1s"), [*tiny_overrides, "train.keep=best"])
    full = train(cfg, tmp_path / "full")
    scripted_validation.clear()
    assert train(cfg, tmp_path / "split", stop_after=4) is None  # after the best (step 3)
    resumed = train(cfg, tmp_path / "split", resume=True)  # best weights come from best.pt
    assert full is not None and resumed is not None
    assert resumed.results["kept"] == full.results["kept"]
    assert resumed.test.mean == full.test.mean
    assert _weights_equal(
        RunDir(tmp_path / "full").load_checkpoint(RunDir(tmp_path / "full").final_weights)[
            "learner"
        ],
        RunDir(tmp_path / "split").load_checkpoint(RunDir(tmp_path / "split").final_weights)[
            "learner"
        ],
    )


def test_keep_last_is_the_default_and_says_so(tmp_path, tiny_overrides):
    cfg = load_config(recipe_path("omniglot/protonet-5w1s"), tiny_overrides)
    assert cfg.train.keep == "last"
    result = train(cfg, tmp_path / "run")
    assert result is not None
    assert result.results["kept"] == {"weights": "last", "step": 6}
    assert not RunDir(tmp_path / "run").best_weights.exists()


def test_keep_best_also_validates_after_the_last_step(tmp_path, tiny_overrides):
    # val_every=4 of 6 steps: validations at 4 and, for keep=best, at 6 (the last weights).
    cfg = load_config(
        recipe_path("omniglot/protonet-5w1s"),
        [*tiny_overrides, "train.keep=best", "train.val_every=4"],
    )
    result = train(cfg, tmp_path / "run")
    assert result is not None
    val = [r["step"] for r in RunDir(tmp_path / "run").metrics() if r["split"] == "val"]
    assert val == [4, 6]
    assert result.results["kept"]["step"] in (4, 6)
    # Longer than the run: only the validation after the last step.
    cfg = load_config(
        recipe_path("omniglot/protonet-5w1s"),
        [*tiny_overrides, "train.keep=best", "train.val_every=100"],
    )
    result = train(cfg, tmp_path / "run2")
    assert result is not None and result.results["kept"]["step"] == 6
