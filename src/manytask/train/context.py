"""Where a run executes: its device, data folders and place among processes.

A :class:`RunContext` is built once, at the command-line edge (or by a user's script), from the
config and the environment; everything below it takes it as an argument and reads no
environment variable. A later multi-process launcher (``torchrun``) fills ``rank`` and
``world_size`` here, and only the process with ``is_writer`` writes to the run folder.

Example:
    >>> ctx = RunContext(device=torch.device("cpu"))
    >>> ctx.is_writer, ctx.world_size
    (True, 1)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from manytask.typed import ConfigError

__all__ = ["RunContext", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU; anything else is checked and used."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: {name!r} is not a device (try auto, cpu, cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was asked for but CUDA is not available here; use cpu")
    return device


@dataclass(frozen=True)
class RunContext:
    """The execution context of a run.

    Attributes:
        device: where the learner and the episodes live.
        data_dir: the data directory (``None``: the library's default rules).
        cache_dir: where decoded data sets are cached (``None``: the default rules).
        progress: show progress bars or progress lines.
        rank: this process's rank among ``world_size`` processes.
        world_size: how many processes train together.
    """

    device: torch.device
    data_dir: Path | None = None
    cache_dir: Path | None = None
    progress: bool = True
    rank: int = 0
    world_size: int = 1

    @property
    def is_writer(self) -> bool:
        """Whether this process writes the run folder (rank 0)."""
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: str = "auto", *, quiet: bool = False) -> RunContext:
        """The context of a single process: device resolved, data folders from the environment.

        This is the one place that reads ``MANYTASK_DATA`` and ``MANYTASK_CACHE``.
        """
        from manytask.data.paths import cache_dir, data_dir

        return cls(
            device=resolve_device(device),
            data_dir=data_dir(),
            cache_dir=cache_dir(),
            progress=not quiet,
        )

    def replace(self, **changes: object) -> RunContext:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
