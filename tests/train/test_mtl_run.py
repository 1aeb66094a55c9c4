"""The multi-task family end to end: config errors, a run, resume, single-task, compare."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from manytask.cli import main
from manytask.config import ConfigError, load_config
from manytask.data import registry as data_registry
from manytask.data.multitask import MultiTaskData, TaskData, TaskSpec
from manytask.mtl.delta import delta_m
from manytask.train import RunContext, RunDir, load_run, train
from manytask.train.loop import Window

CTX = RunContext(device=torch.device("cpu"), progress=False)


def load_toy(data_dir=None, *, seed: int = 0, n: int = 48) -> MultiTaskData:
    """Three tasks of three kinds with their own inputs: 3-way, binary, 2-d regression."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3, 6, 3, generator=g)

    def part(i: int, rows: int) -> TaskData:
        x = torch.randn(rows, 6, generator=g) + i
        z = x @ w[i]
        y = (z.argmax(1), (z[:, 0] > 0).float(), z[:, :2])[i]
        return TaskData(x, y)

    specs = (
        TaskSpec("digit", "multiclass", 3),
        TaskSpec("odd", "binary", 1),
        TaskSpec("pos", "regression", 2, weight=0.5),
    )
    splits = [tuple(part(i, rows) for i in range(3)) for rows in (n, n // 2, n // 2)]
    return MultiTaskData("toy3", specs, *splits, input_shape=(6,), shared_inputs=False)


@pytest.fixture
def toy(monkeypatch):
    info = data_registry.DatasetInfo("toy3", "three kinds of task (test)", load_toy)
    monkeypatch.setitem(data_registry.DATASETS, "toy3", info)
    return info


def toy_config(**overrides):
    raw = {
        "family": "mtl",
        "name": "toy",
        "device": "cpu",
        "quiet": True,
        "data": {"dataset": "toy3"},
        "model": {"conditioning": "multi_head", "backbone_args": {"hidden": [16]}},
        "train": {
            "steps": 12,
            "batch_size": 8,
            "tasks_per_step": 2,
            "log_every": 2,
            "checkpoint_every": 4,
            "val_every": 6,
            "optim": {"lr": 0.01},
        },
    }
    return load_config(raw, [f"{k}={v}" for k, v in overrides.items()])


# --- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("override", "match"), [
    ("train.stepz=3", "Did you mean 'steps'"),
    ("model.args.num_expert=2", "Did you mean 'num_experts'"),
    ("model.conditioning=mmoee", "Did you mean 'mmoe'"),
    ("model.backbone_args.hiden=[4]", "Did you mean 'hidden'"),
    ("method.name=min_max", "Did you mean 'minmax'"),
    ("method.args.temprature=1", "Valid arguments"),
    ("data.dataset=omniglot", "meta-learning data set"),
    ("data.p=high", "data.p: expected a number"),
    ("train.task_sampling=random", "one of 'uniform', 'proportional', 'temperature'"),
    ("train.temperature=2", "only used with train.task_sampling=temperature"),
    ("train.batch_size=0", "out of range"),
    ("model.descriptor=text", "picks its task-specific parts by task index"),
    ("tasks=[]", "trains nothing"),
    ("eval.delta_m=maninis", "'libmtl', 'nash_mtl'"),
])  # fmt: skip
def test_config_errors_name_the_key_and_the_fix(override, match):
    base = {
        "family": "mtl",
        "data": {"dataset": "mmoe_synthetic"},
        "model": {"conditioning": "mmoe"},
    }
    if override.startswith("method.args"):
        base["method"] = {"name": "minmax"}
    with pytest.raises(ConfigError, match=match):
        load_config(base, [override])


def test_numbers_in_any_notation_and_the_minmax_rule():
    cfg = load_config(
        {"family": "mtl", "method": {"name": "minmax", "args": {"temperature": "1e-1"}}},
        ["train.optim.lr=1e-3", "train.steps=2e3"],
    )
    assert cfg.train.optim.lr == 0.001 and cfg.train.steps == 2000
    assert cfg.method.args == {"temperature": 0.1}
    with pytest.raises(ConfigError, match="tasks_per_step=null"):
        load_config({"family": "mtl", "method": {"name": "minmax"}}, ["train.tasks_per_step=2"])


def test_setup_errors_come_before_the_run_folder(tmp_path, toy):
    for override, match in [
        ({"model.backbone": "conv4", "model.backbone_args.hidden": 8}, "needs image inputs"),
        ({"tasks": "[digit, oddd]"}, "Did you mean 'odd'"),
        ({"method.args.weights": "{parity: 2}"}, "does not have; its tasks are digit, odd, pos"),
        ({"method.args.weights": "[1, 2]"}, "2 weights for 3 tasks"),
        ({"train.batch_size": "1e9"}, "max_batch_values"),
        ({"eval.baseline": f"[{tmp_path / 'nowhere'}]"}, "no such run folder"),
    ]:
        cfg = toy_config(**override)
        with pytest.raises(ConfigError, match=match):
            train(cfg, tmp_path / "run", CTX)
        assert not (tmp_path / "run").exists()


# --- a run -------------------------------------------------------------------------------------


def test_mixed_kinds_train_evaluate_and_report(tmp_path, toy):
    result = train(toy_config(), tmp_path / "run", CTX)
    r = result.results
    assert r["tasks"] == ["digit", "odd", "pos"]
    assert list(r["test"]["per_task"]["digit"]) == ["accuracy"]
    assert set(r["test"]["per_task"]["odd"]) == {"auc", "accuracy"}
    assert set(r["test"]["per_task"]["pos"]) == {"mse", "mae"}
    assert r["metrics"]["mse"]["higher_is_better"] is False
    assert r["parameters"]["total"] == r["parameters"]["shared"] + sum(
        r["parameters"]["per_task"].values()
    )
    run = RunDir(tmp_path / "run")
    for name in ("report.md", "task_curves.png", "task_metrics.png", "config.yaml"):
        assert (run.path / name).exists(), name
    records = list(run.metrics())
    train_lines = [x for x in records if x["split"] == "train"]
    assert all(x["loss/digit"] > 0 for x in train_lines if "loss/digit" in x)
    assert any("weight/pos" in x for x in train_lines)
    assert [x["step"] for x in records if x["split"] == "val"] == [6, 12]
    report = (run.path / "report.md").read_text()
    assert "| digit |" in report and "pos" in report
    # The trained model comes back without its data, and `manytask eval` scores it again.
    model = load_run(run.path)
    assert model(torch.zeros(2, 6), 2).shape == (2, 2)
    assert main(["eval", str(run.path), "--quiet"]) == 0
    again = run.read_json("eval-test-seed0.json")
    assert again["per_task"] == r["test"]["per_task"]


def test_fixed_weights_come_from_the_specs(tmp_path, toy):
    result = train(toy_config(**{"train.tasks_per_step": "null"}), tmp_path / "r", CTX)
    weights = [x for x in RunDir(result.run.path).metrics() if "weight/pos" in x]
    assert weights[0]["weight/pos"] == 0.5 and weights[0]["weight/digit"] == 1.0


def test_minmax_runs_on_tasks_of_different_losses(tmp_path, toy):
    cfg = toy_config(**{"train.tasks_per_step": "null", "method.name": "minmax",
                        "method.args.temperature": 0.5})  # fmt: skip
    result = train(cfg, tmp_path / "r", CTX)
    line = [x for x in RunDir(result.run.path).metrics() if x["split"] == "train"][-1]
    losses = [line[f"loss/{t}"] for t in ("digit", "odd", "pos")]
    assert max(losses) >= line["loss"] - 1e-3  # the soft max lies below the (averaged) max
    assert sum(line[f"weight/{t}"] for t in ("digit", "odd", "pos")) == pytest.approx(1.0)


def _same_run(a, b):
    wa, wb = load_run(a).state_dict(), load_run(b).state_dict()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    strip = lambda run: [{k: v for k, v in x.items() if k != "elapsed_s"} for x in run.metrics()]  # noqa: E731
    assert strip(RunDir(a)) == strip(RunDir(b))
    ra, rb = RunDir(a).read_json("results.json"), RunDir(b).read_json("results.json")
    assert ra["test"] == rb["test"]


def test_stop_and_resume_is_bit_identical(tmp_path, toy):
    cfg = toy_config(**{"train.task_sampling": "temperature", "train.temperature": 2.0})
    assert train(cfg, tmp_path / "full", CTX) is not None
    assert train(cfg, tmp_path / "split", CTX, stop_after=5) is None  # between checkpoints
    assert RunDir(tmp_path / "split").load_checkpoint()["parts"]["clock"]["step"] == 5
    assert train(cfg, tmp_path / "split", CTX, resume=True) is not None
    _same_run(tmp_path / "full", tmp_path / "split")


def test_dropout_is_seeded_per_step_and_the_global_generator_is_left_alone(tmp_path, toy):
    """Found by hand: two runs of mtl/emotions-shared (dropout 0.2) gave different test AUCs,
    because dropout drew from torch's global generator, which torch seeds at random."""
    cfg = toy_config(**{"model.backbone_args.dropout": 0.5})
    torch.manual_seed(123)
    before = torch.get_rng_state()
    assert train(cfg, tmp_path / "a", CTX) is not None
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random state is untouched
    torch.manual_seed(456)  # another global state: the run must not depend on it
    assert train(cfg, tmp_path / "b", CTX) is not None
    _same_run(tmp_path / "a", tmp_path / "b")
    assert train(cfg, tmp_path / "split", CTX, stop_after=5) is None
    assert train(cfg, tmp_path / "split", CTX, resume=True) is not None
    _same_run(tmp_path / "a", tmp_path / "split")


def test_resume_refuses_another_method(tmp_path, toy):
    cfg = toy_config()
    train(cfg, tmp_path / "r", CTX, stop_after=4)
    other = toy_config(**{"method.args.weights": "[1, 1, 3]"})
    with pytest.raises(ConfigError, match="run's own config"):
        train(other, tmp_path / "r", CTX, resume=True)


RECIPE = {
    "family": "mtl", "name": "syn", "device": "cpu",
    "data": {"dataset": "mmoe_synthetic", "sizes": [600, 100, 100], "dim": 8},
    "model": {"conditioning": "mmoe", "backbone_args": {"hidden": [8]}, "args": {"num_experts": 2}},
    "train": {"steps": 300, "batch_size": 16, "log_every": 10, "checkpoint_every": 20},
}  # fmt: skip


def test_a_killed_manytask_run_resumes_to_the_same_result(tmp_path):
    recipe = tmp_path / "syn.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "manytask.cli", "run", str(recipe), "--quiet", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    run = RunDir(out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if run.last_checkpoint.exists():
            step = torch.load(run.last_checkpoint, weights_only=True)["parts"]["clock"]["step"]
            if step >= 40:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (out / "results.json").exists()
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    assert main(["run", str(recipe), "--quiet", "--out", str(tmp_path / "straight")]) == 0
    _same_run(out, tmp_path / "straight")


# --- baselines, Delta_m and compare -----------------------------------------------------------


def test_single_task_baselines_delta_m_and_compare(tmp_path, toy, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "toy.yaml"
    raw = {
        "family": "mtl", "name": "toy", "device": "cpu", "quiet": True,
        "data": {"dataset": "toy3"},
        "model": {"conditioning": "multi_head", "backbone_args": {"hidden": [16]}},
        "train": {"steps": 8, "batch_size": 8, "log_every": 4, "checkpoint_every": 4},
    }  # fmt: skip
    recipe.write_text(yaml.safe_dump(raw))
    assert main(["run", str(recipe), "--single-task", "--out", "single"]) == 0
    single = RunDir("single").read_json("results.json")
    assert single["kind"] == "single_task" and single["parameters"]["shared"] == 0
    assert sorted(os.listdir("single/00-digit")) and (tmp_path / "single/02-pos").is_dir()
    # Each task was trained alone, with the recipe's model.
    sub = RunDir("single/01-odd").read_json("results.json")
    assert sub["tasks"] == ["odd"]
    for seed in (0, 1):
        assert main(["run", str(recipe), f"seed={seed}", "eval.baseline=[single]",
                     "--out", f"mtl{seed}"]) == 0  # fmt: skip
    r0 = RunDir("mtl0").read_json("results.json")
    want = delta_m(r0["test"]["per_task"], single["test"]["per_task"],
                   {m: v["higher_is_better"] for m, v in r0["metrics"].items()})  # fmt: skip
    assert r0["delta_m"]["value"] == pytest.approx(want.value)
    assert "Delta_m" in capsys.readouterr().out
    assert main(["compare", "mtl0", "mtl1", "--baseline", "single", "--out", "cmp"]) == 0
    table = capsys.readouterr().out
    assert "| toy (2 runs) | baseline |" in table
    assert "| digit accuracy ↑ |" in table and "| pos mse ↓ |" in table
    assert "Delta_m % (libmtl) ↑" in table
    # The negative-transfer report: each task's headline metric, 2 seeds against 1 baseline run
    # (sign only), flagged per task; the same rows in compare.json.
    assert "Negative transfer, toy against the baseline:" in table
    assert "| digit | accuracy |" in table and "| pos | mse |" in table
    assert "2 / 1 |" in table
    saved = json.loads((tmp_path / "cmp/compare.json").read_text())
    r1 = RunDir("mtl1").read_json("results.json")
    mean = (r0["delta_m"]["value"] + r1["delta_m"]["value"]) / 2
    assert saved["delta_m"]["toy"]["mean"] == pytest.approx(mean)
    rows = {r["task"]: r for r in saved["transfer"]["toy"]}
    assert set(rows) == {"digit", "odd", "pos"}
    pos_multi = (r0["test"]["per_task"]["pos"]["mse"] + r1["test"]["per_task"]["pos"]["mse"]) / 2
    pos_gain = single["test"]["per_task"]["pos"]["mse"] - pos_multi  # lower mse is better
    assert rows["pos"]["gain"] == pytest.approx(pos_gain)
    assert rows["pos"]["verdict"] == ("better?" if pos_gain > 0 else "worse?")
    assert (tmp_path / "cmp/compare.png").stat().st_size > 1000
    # Columns of one recipe are named by what differs among them (here the method), not by
    # a folder: found when a table of every method showed "[multi_head]" and "[mgda-s0]".
    assert main(["run", str(recipe), "method.name=mean", "--out", "mean0"]) == 0
    capsys.readouterr()
    assert main(["compare", "mtl0", "mtl1", "mean0", "--out", "cmp2"]) == 0
    assert "| toy [fixed] (2 runs) | toy [mean] (1 run) |" in capsys.readouterr().out
    # Several columns also get the summary turned sideways: one row per column of runs.
    assert main(["compare", "mtl0", "mtl1", "mean0", "--baseline", "single", "--out", "cmp3"]) == 0
    table = capsys.readouterr().out
    assert "Summary by run" in table
    assert (
        "| run | digit accuracy ↑ | odd auc ↑ | pos mse ↓ | mean accuracy ↑ | mean auc ↑ | "
        "mean mae ↓ | mean mse ↓ | Delta_m % (libmtl) ↑"
    ) in table
    by_run = json.loads((tmp_path / "cmp3/compare.json").read_text())["by_run"]
    rows = {r[0]: r for r in by_run["rows"]}
    assert set(rows) == {"toy [fixed] (2 runs)", "toy [mean] (1 run)", "baseline"}
    r_mean = RunDir("mean0").read_json("results.json")
    delta = delta_m(r_mean["test"]["per_task"], single["test"]["per_task"],
                    {m: v["higher_is_better"] for m, v in r_mean["metrics"].items()})  # fmt: skip
    heads = by_run["headers"]
    assert rows["toy [mean] (1 run)"][heads.index("Delta_m % (libmtl) ↑")] == f"{delta.value:+.2f}"
    assert rows["toy [mean] (1 run)"][heads.index("tasks better / worse")].endswith("of 3")
    # A baseline that misses a task is refused before training.
    assert main(["run", str(recipe), "eval.baseline=[single/00-digit]", "--out", "x"]) == 2
    assert "no baseline result for task(s) odd, pos" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_compare_pools_a_run_saved_before_a_setting_existed(tmp_path, toy):
    """Found on MultiMNIST: seed-0 runs from before Conv4's pool/padding/norm settings (and
    the affinity diagnostics) existed formed their own column beside seeds 1-2, which wrote
    the same defaults out; a config is compared with today's defaults filled in."""
    from manytask.train.compare import compare_runs

    for seed in (0, 1):
        train(toy_config(**{"seed": seed, "train.val_every": 0}), tmp_path / f"s{seed}", CTX)
    old = RunDir(tmp_path / "s0")
    raw = dict(old.read_config())
    raw["train"] = {k: v for k, v in raw["train"].items() if k != "tensorboard"}
    raw.pop("diagnostics")
    raw["quiet"] = not raw["quiet"]
    (tmp_path / "s0" / "config.yaml").write_text(json.dumps(raw))
    columns = compare_runs([tmp_path / "s0", tmp_path / "s1"]).columns
    assert [len(c.runs) for c in columns] == [2]
    # A setting that differs for real still splits them.
    raw["train"]["batch_size"] = 4
    (tmp_path / "s0" / "config.yaml").write_text(json.dumps(raw))
    assert len(compare_runs([tmp_path / "s0", tmp_path / "s1"]).columns) == 2


def test_compare_refuses_unfinished_and_meta_runs(tmp_path, toy, capsys):
    train(toy_config(), tmp_path / "half", CTX, stop_after=2)
    assert main(["compare", str(tmp_path / "half"), "--out", str(tmp_path / "c")]) == 2
    assert "has not finished" in capsys.readouterr().err


def test_window_averages_each_name_over_the_steps_that_reported_it():
    w = Window()
    w.add({"loss": torch.tensor(1.0), "loss/a": torch.tensor(2.0)})
    w.add({"loss": torch.tensor(3.0)})
    assert w.means() == {"loss": 2.0, "loss/a": 2.0}
    again = Window()
    again.load_state_dict(w.state_dict())
    assert again.means() == w.means()


def test_a_shipped_recipe_runs_from_the_command_line_into_a_file(tmp_path):
    """A new user's first run: a shipped recipe, tiny overrides, output redirected to a file."""
    out = tmp_path / "out.txt"
    cmd = [
        sys.executable, "-m", "manytask.cli", "run", "mtl/mmoe-synthetic-mmoe",
        "data.sizes=[300, 50, 50]", "data.dim=8", "train.steps=20", "train.log_every=10",
        "train.val_every=10", "train.optim.lr=3e-3", "device=cpu", "--out", str(tmp_path / "r"),
    ]  # fmt: skip
    with out.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=300)
    text = out.read_text()
    assert proc.returncode == 0, text
    assert "mmoe-synthetic-mmoe: test mean over 2 tasks: mse" in text
    assert "\r" not in text  # plain progress lines, no carriage-return bars in a file
    assert (tmp_path / "r" / "report.md").exists()


def test_tasks_per_step_over_the_task_count_says_it_samples_nothing(tmp_path, toy, caplog):
    """Found by hand: tasks_per_step=100 on 50 tasks trained every task at every step without a
    word; it still does (a recipe's value must keep working on a task subset) but says so."""
    cfg = toy_config(**{"train.tasks_per_step": 5, "train.steps": 2, "train.val_every": 0})
    with caplog.at_level(logging.INFO, logger="manytask"):
        train(cfg, tmp_path / "r", CTX)
    assert "tasks_per_step=5 covers all 3 tasks" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="manytask"):
        train(toy_config(**{"train.steps": 2, "train.val_every": 0}), tmp_path / "s", CTX)
    assert "covers all" not in caplog.text
