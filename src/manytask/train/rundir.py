"""A run is a folder: resolved config, metrics (JSON lines), checkpoints, results and a report.

Layout::

    RUN_DIR/
      config.yaml          the resolved configuration (every key, defaults included)
      metrics.jsonl        one JSON object per line: {"step", "split", ...}
      checkpoints/last.pt  the newest training state (written atomically)
      checkpoints/final.pt the trained learner's weights
      checkpoints/best.pt  the weights of the best validation (``train.keep: best`` only)
      results.json         final metrics (test accuracy with its 95% CI, wall time)
      report.md            a readable summary with PNG plots beside it

Nothing is ever written outside the run folder, and every write goes through this class.
Files are replaced atomically (written to a temporary file in the same folder, flushed, then
renamed), so a run killed at any moment leaves either the old or the new file, never half of
one; :meth:`RunDir.clean_temp` removes the temporary files such a kill leaves behind. With
``writer=False`` (every process but rank 0 of a multi-process run) every write is skipped, so
one flag makes one process the only writer.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch
import yaml

__all__ = ["RunDir", "atomic_write"]


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` through ``write(fileobj)`` into a temp file, fsync, then rename over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunDir:
    """Reads and writes the files of one run folder.

    Args:
        path: the run folder (created on :meth:`create`).

    Example:
        >>> import tempfile
        >>> run = RunDir(Path(tempfile.mkdtemp()) / "demo")
        >>> run.create({"name": "demo"})
        >>> run.log({"step": 1, "split": "train", "loss": 0.5})
        >>> [r["loss"] for r in run.metrics()]
        [0.5]
    """

    def __init__(self, path: str | os.PathLike[str], *, writer: bool = True) -> None:
        self.path = Path(path)
        self.writer = writer
        self.sinks: list[Callable[[dict[str, Any]], None]] = []
        """Extra receivers of every :meth:`log` record (e.g. TensorBoard)."""

    def __repr__(self) -> str:
        return (
            f"RunDir({str(self.path)!r})"
            if self.writer
            else f"RunDir({str(self.path)!r}, writer=False)"
        )

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    @property
    def final_weights(self) -> Path:
        return self.checkpoint_dir / "final.pt"

    @property
    def best_weights(self) -> Path:
        return self.checkpoint_dir / "best.pt"

    def check_new(self) -> None:
        """Raise ``FileExistsError`` if the folder already holds a run."""
        if self.config_path.exists():
            raise FileExistsError(
                f"{self.path} already holds a run (config.yaml exists). Resume it with "
                f"`manytask run --resume {self.path}`, or choose another folder with --out."
            )

    def create(self, config: dict[str, Any]) -> None:
        """Make the folder and write ``config.yaml``; refuse to reuse a folder with a run in it."""
        self.check_new()
        if not self.writer:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoint_dir.mkdir(exist_ok=True)
        self.write_bytes("config.yaml", yaml.safe_dump(config, sort_keys=False).encode())

    def clean_temp(self) -> list[Path]:
        """Delete the temporary files of interrupted atomic writes (``.NAME.*.tmp``)."""
        if not self.writer:
            return []
        found = [*self.path.glob(".*.tmp"), *self.checkpoint_dir.glob(".*.tmp")]
        for tmp in found:
            tmp.unlink(missing_ok=True)
        return found

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write ``RUN_DIR/name`` atomically (skipped when this process is not the writer)."""
        path = self.path / name
        if self.writer:
            atomic_write(path, lambda fh: fh.write(data))
        return path

    def read_config(self) -> dict[str, Any]:
        if not self.config_path.exists():
            raise FileNotFoundError(
                f"{self.path} is not a manytask run folder: {self.config_path.name} is missing"
            )
        data = yaml.safe_load(self.config_path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{self.config_path} does not hold a mapping")
        return data

    def log(self, record: dict[str, Any]) -> None:
        """Append one metrics record (a line of JSON) and flush it to disk."""
        if not self.writer:
            return
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()
        for sink in self.sinks:
            sink(record)

    def metrics(self) -> Iterator[dict[str, Any]]:
        """The metrics records, in order; a torn last line (from a kill) is skipped."""
        if not self.metrics_path.exists():
            return
        with self.metrics_path.open() as fh:
            for line in fh:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue

    def truncate_metrics(self, step: int) -> None:
        """Keep only records with ``step <= step`` (used when resuming from a checkpoint)."""
        kept = [r for r in self.metrics() if int(r.get("step", 0)) <= step]
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept).encode()
        self.write_bytes(self.metrics_path.name, text)

    def save_checkpoint(self, state: dict[str, Any], path: Path | None = None) -> None:
        """Write a training state atomically (default: ``checkpoints/last.pt``)."""
        if self.writer:
            atomic_write(path or self.last_checkpoint, lambda fh: torch.save(state, fh))

    def load_checkpoint(self, path: Path | None = None) -> dict[str, Any]:
        """Load a state saved by :meth:`save_checkpoint` (``weights_only=True``)."""
        target = path or self.last_checkpoint
        if not target.exists():
            raise FileNotFoundError(
                f"no checkpoint at {target}: the run stopped before its first checkpoint; "
                "start it again without --resume"
            )
        state = torch.load(target, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{target} does not hold a manytask checkpoint")
        return state

    def write_json(self, name: str, data: dict[str, Any]) -> Path:
        """Write ``RUN_DIR/name`` as indented JSON, atomically."""
        return self.write_bytes(name, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())

    def read_json(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads((self.path / name).read_text())
        return result
