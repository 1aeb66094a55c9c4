"""Training loops, evaluation (mean and 95% CI), run folders, checkpoints and reports."""

from manytask.train.api import evaluate_run, load_run, run_config
from manytask.train.evaluate import Accuracy, episode_accuracy, evaluate, mean_ci95
from manytask.train.loop import TrainResult, train
from manytask.train.rundir import RunDir

__all__ = [
    "Accuracy",
    "RunDir",
    "TrainResult",
    "episode_accuracy",
    "evaluate",
    "evaluate_run",
    "load_run",
    "mean_ci95",
    "run_config",
    "train",
]
