import json
import subprocess
import sys

import matplotlib
import pytest
import torch
import yaml
from PIL import Image

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


def test_validate_rejects_bad_learner_arguments_before_any_data(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    recipe = yaml.safe_load(manytask.recipes.recipe_path("omniglot/protonet-5w1s").read_text())
    recipe["model"]["encoder_args"] = {"hiden": 8}
    bad.write_text(yaml.safe_dump(recipe))
    assert main(["validate", str(bad)]) == 1
    assert "model.encoder_args.hiden" in capsys.readouterr().out


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
    assert "5-way 1-shot test" in printed and "95% CI" in printed
    for name in [
        "config.yaml",
        "metrics.jsonl",
        "results.json",
        "report.md",
        "learning_curves.png",
        "test_metric.png",
        "checkpoints/last.pt",
        "checkpoints/final.pt",
    ]:
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert results["test"]["tasks"] == 8 and 0 <= results["test"]["mean"] <= 100
    assert results["test"]["metric"] == "acc" and results["test"]["higher_is_better"] is True
    splits = {
        json.loads(line)["split"] for line in (out / "metrics.jsonl").read_text().splitlines()
    }
    assert splits == {"train", "val", "test"}
    # The saved config is complete, versioned and re-runnable.
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["episodes"] == 6 and saved["eval"]["episodes"] == 8
    assert saved["schema"] == 2 and saved["family"] == "meta"

    assert main(["eval", str(out), "eval.episode.shots=5", "--quiet"]) == 0
    assert "5-way 5-shot test" in capsys.readouterr().out
    assert list(out.glob("eval-5w5s-*.json"))

    learner = manytask.load_run(out)
    assert not learner.training
    sx, qx = torch.rand(1, 5, 1, 28, 28), torch.rand(1, 7, 1, 28, 28)
    assert learner(sx, torch.arange(5)[None], qx, ways=5).shape == (1, 7, 5)

    # Running into the same folder again refuses instead of overwriting.
    assert main(["run", "omniglot/protonet-5w1s", *tiny_overrides, "--out", str(out)]) == 2


def test_resume_with_out_is_an_error(tmp_path, capsys):
    # Bug 7: `run --resume RUN --out OTHER` silently ignored --out.
    code = main(["run", "--resume", str(tmp_path / "a"), "--out", str(tmp_path / "b")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--out cannot move it" in err and "config.yaml --out" in err


def test_bad_eval_settings_fail_before_training(tmp_path, capsys, tiny_overrides):
    # Bug 4: more test ways than the test split has failed only after the whole run.
    out = tmp_path / "r"
    args = ["run", "omniglot/protonet-5w1s", *tiny_overrides, "train.episodes=100000"]
    assert main([*args, "eval.episode.ways=1700", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "eval.episode (validation): ways=1700 but only 688 classes" in err
    assert main([*args, "train.val_every=0", "eval.episode.ways=1700", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "eval.episode: ways=1700 but only 1692 classes are available" in err
    assert not out.exists()


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path, capsys, monkeypatch):
    # Bug 8: every ValueError became one line, so a shape bug inside a learner lost its trace.
    from manytask.meta import ProtoNet

    def broken(self, *args, **kwargs):
        raise ValueError("a shape bug deep inside a learner")

    monkeypatch.setattr(ProtoNet, "forward", broken)
    args = ["run", "omniglot/protonet-5w1s", "train.episodes=2", "data.source=embedded",
            "model.encoder_args.hidden=8", "--quiet", "--out", str(tmp_path / "r")]  # fmt: skip
    with pytest.raises(ValueError, match="a shape bug"):
        main(args)
    # A config error stays one line, unless --debug asks for the traceback.
    assert main(["run", "omniglot/protonet-5w1s", "train.episodes=x"]) == 2
    assert "Traceback" not in capsys.readouterr().err
    with pytest.raises(manytask.config.ConfigError):
        main(["--debug", "run", "omniglot/protonet-5w1s", "train.episodes=x"])


def test_output_to_a_file_prints_plain_progress_lines(tmp_path, tiny_overrides):
    # Bug 12: redirected output got thousands of carriage-return bar updates.
    overrides = [o for o in tiny_overrides if o != "quiet=true"]
    log = tmp_path / "log.txt"
    with log.open("w") as fh:
        subprocess.run(
            [sys.executable, "-m", "manytask.cli", "run", "omniglot/protonet-5w1s", *overrides,
             "--out", str(tmp_path / "r")],
            stdout=fh, stderr=subprocess.STDOUT, check=True,
        )  # fmt: skip
    text = log.read_text()
    assert "\r" not in text
    assert "train 6/6 (100%)" in text and "test 8/8 (100%)" in text
    assert len(text.splitlines()) < 12


def test_evaluation_progress_counts_tasks(capsys):
    # Bug 2: the bar's total counted batches while it advanced by episodes.
    from manytask.data import ImageStore, fixed_episodes
    from manytask.meta import ProtoNet
    from manytask.nn import Conv4
    from manytask.train import evaluate

    store = ImageStore(
        images=torch.randint(0, 256, (8, 6, 28, 28), dtype=torch.uint8),
        class_names=tuple(f"A/c{i}" for i in range(8)), alphabets=("A",),
        alphabet_of=torch.zeros(8, dtype=torch.long),
        drawers=torch.zeros(8, 6, dtype=torch.long), source="random",
    )  # fmt: skip
    episodes = fixed_episodes(store, 5, 1, 2, num_episodes=10, batch_size=4)
    evaluate(ProtoNet(Conv4(hidden=4)), episodes, progress=True, desc="eval")
    err = capsys.readouterr().err
    assert "eval 10/10 (100%)" in err


def test_report_leaves_the_matplotlib_backend_alone(tmp_path, tiny_overrides):
    # Bug 5: report.py called matplotlib.use("Agg"), changing a notebook's backend.
    before = matplotlib.get_backend()
    matplotlib.rcParams["backend"] = "svg"
    try:
        assert main(["run", "omniglot/protonet-5w1s", *tiny_overrides, "--out",
                     str(tmp_path / "r")]) == 0  # fmt: skip
        assert matplotlib.get_backend() == "svg"
        assert (tmp_path / "r" / "learning_curves.png").stat().st_size > 1000
    finally:
        matplotlib.rcParams["backend"] = before


def test_predict_classifies_image_folders(tmp_path, capsys, tiny_overrides):
    from manytask.data import load_omniglot, omniglot_split

    out = tmp_path / "run"
    assert main(["run", "omniglot/protonet-5w1s", *tiny_overrides, "--out", str(out)]) == 0
    test = omniglot_split(load_omniglot(source="embedded"), "vinyals", "test")
    support, query = tmp_path / "support", tmp_path / "query"
    for c in range(3):  # 3 classes, 2 shots each, dark ink on white paper like a scan
        (support / f"class{c}").mkdir(parents=True)
        for i in range(2):
            img = Image.fromarray(255 - test.images[c, i].numpy())
            img.save(support / f"class{c}" / f"{i}.png")
    query.mkdir()
    for c in range(3):
        Image.fromarray(255 - test.images[c, 5].numpy()).resize((56, 56)).save(query / f"q{c}.png")
    capsys.readouterr()
    assert main(["predict", str(out), "--support", str(support), "--query", str(query)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for line in lines:
        _path, label, prob = line.split()
        assert label.startswith("class") and prob.endswith("%")
    assert main(["predict", str(out), "--support", str(query), "--query", str(query)]) == 2


def test_tensorboard_needs_its_extra_or_writes_events(tmp_path, capsys, tiny_overrides):
    args = ["run", "omniglot/protonet-5w1s", *tiny_overrides, "train.tensorboard=true",
            "--out", str(tmp_path / "r")]  # fmt: skip
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert main(args) == 2
        assert "pip install manytask[tensorboard]" in capsys.readouterr().err
    else:
        assert main(args) == 0
        assert list((tmp_path / "r" / "tensorboard").glob("events.*"))


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


def test_overrides_after_an_option_are_overrides(tmp_path, capsys, tiny_overrides):
    # Found by hand: `manytask run RECIPE --out DIR train.steps=5` said "unrecognized
    # arguments", because argparse ends a positional list at the first option.
    out = tmp_path / "run"
    args = ["run", "omniglot/protonet-5w1s", "--out", str(out), *tiny_overrides]
    assert main(args) == 0
    assert "5-way 1-shot test" in capsys.readouterr().out
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    key, value = tiny_overrides[0].split("=", 1)
    node = cfg
    for part in key.split("."):
        node = node[part]
    assert str(node) == value
    # eval takes its overrides after an option too; a misspelt one is still a clean error.
    capsys.readouterr()
    assert main(["eval", str(out), "--quiet", "eval.episodes=10"]) == 0
    assert "10 tasks" in capsys.readouterr().out
    code = main(["run", "omniglot/protonet-5w1s", "--out", str(tmp_path / "b"), "train.epsiodes=3"])
    assert code == 2 and "Did you mean 'episodes'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a real unknown option is still refused
        main(["run", "omniglot/protonet-5w1s", "--out", str(tmp_path / "c"), "--fast"])
