"""Metrics to TensorBoard, as a sink of the run folder's log (the folder stays the source of truth).

Needs the optional extra: ``pip install manytask[tensorboard]``. Every numeric value of a
``metrics.jsonl`` record becomes a scalar ``SPLIT/KEY`` at its step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from manytask.typed import ManytaskError

__all__ = ["TensorBoardSink"]


class TensorBoardSink:
    """Writes each metrics record as TensorBoard scalars under ``folder``.

    Raises:
        ManytaskError: TensorBoard is not installed (the message names the extra).
    """

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ManytaskError(
                "train.tensorboard is on but TensorBoard is not installed; install it with "
                "`pip install manytask[tensorboard]` (or set train.tensorboard=false)"
            ) from None
        self.folder = folder
        self.writer = SummaryWriter(log_dir=str(folder))

    def __call__(self, record: dict[str, Any]) -> None:
        step, split = int(record.get("step", 0)), str(record.get("split", "train"))
        for key, value in record.items():
            if key in ("step", "split") or isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                self.writer.add_scalar(f"{split}/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
