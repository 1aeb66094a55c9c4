import json

import pytest
import torch

from manytask.train import RunDir, mean_ci95
from manytask.train.rundir import atomic_write


def test_create_refuses_an_existing_run(tmp_path):
    run = RunDir(tmp_path / "r")
    run.create({"name": "a"})
    with pytest.raises(FileExistsError, match="--resume"):
        run.create({"name": "b"})
    assert run.read_config() == {"name": "a"}


def test_truncate_metrics_and_torn_lines(tmp_path):
    run = RunDir(tmp_path / "r")
    run.create({})
    for s in range(1, 6):
        run.log({"step": s, "split": "train", "loss": s / 10})
    with run.metrics_path.open("a") as fh:
        fh.write('{"step": 6, "spl')  # a kill mid-write
    assert [r["step"] for r in run.metrics()] == [1, 2, 3, 4, 5]
    run.truncate_metrics(3)
    assert [r["step"] for r in run.metrics()] == [1, 2, 3]


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"ok": 1}))

    def boom(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert json.loads(path.read_text()) == {"ok": 1}
    assert list(tmp_path.iterdir()) == [path]


class Evil:
    pass


def test_checkpoints_load_weights_only(tmp_path):
    run = RunDir(tmp_path / "r")
    run.create({})
    run.save_checkpoint({"step": 3, "w": torch.ones(2)})
    assert run.load_checkpoint()["step"] == 3
    # A checkpoint holding an arbitrary Python object is refused (weights_only=True).
    torch.save({"x": Evil()}, run.last_checkpoint)
    with pytest.raises(Exception, match=r"[Ww]eights only|weights_only"):
        run.load_checkpoint()


def test_mean_ci95_matches_the_formula():
    mean, ci, std = mean_ci95([0.0, 1.0, 1.0, 0.0])
    assert mean == 0.5 and std == 0.5
    assert ci == pytest.approx(1.96 * 0.5 / 2)


def test_failed_setup_leaves_no_run_folder(tmp_path, tiny_overrides):
    from manytask.config import load_config
    from manytask.recipes import recipe_path
    from manytask.train import train

    cfg = load_config(
        recipe_path("omniglot/protonet-5w1s"),
        [*tiny_overrides, "train.episode.ways=4200", "train.episode.tasks=1",
         "train.episode.queries=1"],
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"train\.episode: ways=4200 but only 4112 classes"):
        train(cfg, tmp_path / "r")
    assert not (tmp_path / "r").exists()
