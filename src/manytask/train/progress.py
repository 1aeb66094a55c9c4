"""Progress reporting for runs (kept here for imports; the code is :mod:`manytask.progress`)."""

from manytask.progress import PlainProgress, progress_bar

__all__ = ["PlainProgress", "progress_bar"]
