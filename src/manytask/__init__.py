"""manytask: multi-task learning and meta-learning for PyTorch."""

__version__ = "0.1.0"

__all__ = ["__version__"]
