"""manytask: multi-task learning and meta-learning for PyTorch."""

from manytask.train.api import load_run

__version__ = "0.1.0"

__all__ = ["__version__", "load_run"]
