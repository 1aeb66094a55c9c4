import json
import subprocess
import sys

import pytest
import torch
import yaml

import manytask
from manytask.cli import main
from manytask.recipes import list_recipes


def test_ls_lists_every_recipe(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for name in list_recipes():
        assert name in out


def test_validate_shipped_and_a_bad_file(tmp_path, capsys):
    assert main(["validate"]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"episode": {"wayz": 5}}}))
    assert main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "train.episode.wayz" in out and "train.episode.ways" in out


def test_run_unknown_key_is_a_clean_error(tmp_path, capsys):
    code = main(["run", "omniglot/protonet-5w1s", "train.epsiodes=3", "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "train.epsiodes" in err and "Did you mean 'episodes'" in err
    assert not (tmp_path / "r").exists()  # nothing written for a bad config


def test_env_prints_versions(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert torch.__version__ in out and manytask.__version__ in out


def test_run_end_to_end_then_eval_and_load(tmp_path, capsys, tiny_overrides):
    out = tmp_path / "run"
    assert main(["run", "omniglot/protonet-5w1s", *tiny_overrides, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "5-way 1-shot test accuracy" in printed and "95% CI" in printed
    for name in [
        "config.yaml",
        "metrics.jsonl",
        "results.json",
        "report.md",
        "learning_curves.png",
        "test_accuracy.png",
        "checkpoints/last.pt",
        "checkpoints/final.pt",
    ]:
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert results["test"]["episodes"] == 8 and 0 <= results["test"]["acc"] <= 100
    splits = {
        json.loads(line)["split"] for line in (out / "metrics.jsonl").read_text().splitlines()
    }
    assert splits == {"train", "val", "test"}
    # The saved config is complete and re-runnable.
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["episodes"] == 6 and saved["eval"]["episodes"] == 8

    assert main(["eval", str(out), "eval.episode.shots=5", "--quiet"]) == 0
    assert "5-way 5-shot test accuracy" in capsys.readouterr().out
    assert list(out.glob("eval-5w5s-*.json"))

    learner = manytask.load_run(out)
    assert not learner.training
    sx, qx = torch.rand(1, 5, 1, 28, 28), torch.rand(1, 7, 1, 28, 28)
    assert learner(sx, torch.arange(5)[None], qx).shape == (1, 7, 5)

    # Running into the same folder again refuses instead of overwriting.
    assert main(["run", "omniglot/protonet-5w1s", *tiny_overrides, "--out", str(out)]) == 2


def test_module_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "manytask.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert manytask.__version__ in proc.stdout


def test_missing_subcommand_exits_with_usage():
    with pytest.raises(SystemExit):
        main([])
