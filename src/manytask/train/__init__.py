"""Training loops, evaluation (mean and 95% CI), run folders, checkpoints and reports."""

from manytask.train.api import evaluate_run, load_run, run_config, train
from manytask.train.build import build_encoder, build_learner
from manytask.train.context import RunContext, resolve_device
from manytask.train.evaluate import Score, evaluate, mean_ci95
from manytask.train.meta import TrainResult
from manytask.train.rundir import RunDir

__all__ = [
    "RunContext",
    "RunDir",
    "Score",
    "TrainResult",
    "build_encoder",
    "build_learner",
    "evaluate",
    "evaluate_run",
    "load_run",
    "mean_ci95",
    "resolve_device",
    "run_config",
    "train",
]
