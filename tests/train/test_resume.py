"""A stopped run resumes to exactly the parameters and metrics of an uninterrupted one."""

import signal
import subprocess
import sys
import time

import torch

from manytask.config import load_config
from manytask.recipes import recipe_path
from manytask.train import RunDir, load_run, train

TIMING_KEYS = {"elapsed_s"}


def _metrics(run: RunDir):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in run.metrics()]


def _step(run: RunDir) -> int:
    return int(run.load_checkpoint()["parts"]["clock"]["step"])


def _weights(run_dir):
    return load_run(run_dir).state_dict()


def _assert_same_run(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert _metrics(RunDir(a)) == _metrics(RunDir(b))
    ra, rb = RunDir(a).read_json("results.json"), RunDir(b).read_json("results.json")
    assert ra["test"] == rb["test"]


def test_stop_and_resume_matches_uninterrupted(tmp_path, tiny_overrides):
    cfg = load_config(recipe_path("omniglot/protonet-5w1s"), tiny_overrides)
    full = train(cfg, tmp_path / "full")
    assert full is not None
    assert train(cfg, tmp_path / "split", stop_after=3) is None  # stops between checkpoints
    split = RunDir(tmp_path / "split")
    assert _step(split) == 3
    # Bug 10: a SIGKILL during an atomic write leaves a temp file; --resume removes it.
    stray = [split.path / ".results.json.abc.tmp", split.checkpoint_dir / ".last.pt.xyz.tmp"]
    for p in stray:
        p.write_bytes(b"half a file")
    resumed = train(cfg, tmp_path / "split", resume=True)
    assert not any(p.exists() for p in stray)
    assert resumed is not None
    _assert_same_run(tmp_path / "full", tmp_path / "split")
    assert resumed.test.mean == full.test.mean


def _interrupt_then_resume(tmp_path, tiny_overrides, *, checkpoint_every, ready, sig):
    """Start a real `manytask run` of 40 episodes, send ``sig`` once ``ready(run)`` holds,
    resume it, and check it against a run that never stopped. Returns (run, process, stdout,
    checkpoint step at the interruption)."""
    overrides = [
        o for o in tiny_overrides if not o.startswith(("train.episodes", "train.checkpoint"))
    ]
    overrides += ["train.episodes=40", f"train.checkpoint_every={checkpoint_every}"]
    out = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "manytask.cli", "run", "omniglot/protonet-5w1s", *overrides]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    run = RunDir(out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if ready(run):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(sig)
    stdout, _ = proc.communicate(timeout=120)
    step = _step(run)
    assert not (out / "results.json").exists()
    subprocess.run(
        [sys.executable, "-m", "manytask.cli", "run", "--resume", str(out)],
        check=True,
        capture_output=True,
    )
    train(load_config(recipe_path("omniglot/protonet-5w1s"), overrides), tmp_path / "straight")
    _assert_same_run(out, tmp_path / "straight")
    return run, proc, stdout, step


def test_killed_process_resumes_to_the_same_result(tmp_path, tiny_overrides):
    """SIGKILL a real `manytask run` part-way, resume it, compare with a run that never stopped."""

    def ready(run):
        ckpt = run.last_checkpoint
        if not ckpt.exists():
            return False
        return torch.load(ckpt, weights_only=True)["parts"]["clock"]["step"] >= 8

    run, _, _, step = _interrupt_then_resume(
        tmp_path, tiny_overrides, checkpoint_every=4, ready=ready, sig=signal.SIGKILL
    )
    assert 8 <= step < 40
    # No temp files survive anywhere in the run folder.
    assert not [p for p in run.path.rglob("*.tmp")]


def test_ctrl_c_checkpoints_and_resumes_exactly(tmp_path, tiny_overrides):
    """SIGINT asks the run to stop after the current episode; nothing finished is lost."""

    def ready(run):
        return sum(1 for r in run.metrics() if r["split"] == "train") >= 5

    _, proc, stdout, step = _interrupt_then_resume(
        tmp_path, tiny_overrides, checkpoint_every=1000, ready=ready, sig=signal.SIGINT
    )  # checkpoint_every=1000: no periodic checkpoint, only the one Ctrl-C asks for
    assert proc.returncode == 130
    assert "--resume" in stdout
    assert 5 <= step < 40


def test_a_meta_run_leaves_the_global_generator_alone(tmp_path, tiny_overrides):
    # Layer constructors draw their default init from torch's global generator; building the
    # learner (then redrawing it from the seed) must not move the caller's random state.
    cfg = load_config(recipe_path("omniglot/protonet-5w1s"), tiny_overrides)
    torch.manual_seed(7)
    before = torch.get_rng_state()
    assert train(cfg, tmp_path / "run") is not None
    assert torch.equal(torch.get_rng_state(), before)
