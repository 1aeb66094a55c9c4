"""Progress: a tqdm bar on a terminal, plain periodic lines when output goes to a file.

On a terminal, a tqdm bar with rate, ETA and running metrics. When stderr is not a terminal (CI,
``nohup``, a cluster job's log), carriage-return updates would fill the log with thousands of
lines, so :class:`PlainProgress` prints one line at most every ``interval`` seconds (and a
final one), e.g. ``train 1200/2800 (43%) 4.1 it/s ETA 6m30s loss=0.153 acc=95.2``.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm.auto import tqdm

__all__ = ["PlainProgress", "progress_bar"]


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class PlainProgress:
    """A progress reporter that writes a plain line every ``interval`` seconds.

    Args:
        total: the count at completion (``None`` if unknown).
        desc: a label at the start of each line.
        file: where lines go (default stderr).
        interval: seconds between lines.
        initial: the count already done (a resumed run).
        unit: the unit of the rate.
    """

    def __init__(
        self,
        *,
        total: int | None,
        desc: str,
        file: IO[str] | None = None,
        interval: float = 30.0,
        initial: int = 0,
        unit: str = "it",
    ) -> None:
        self.total, self.desc, self.file = total, desc, file or sys.stderr
        self.interval, self.unit = interval, unit
        self.n = self._start_n = initial
        self._start = self._last = time.monotonic()
        self._postfix = ""
        self._printed_at = -1

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._print(now)

    def set_postfix(self, **values: Any) -> None:
        self._postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self._printed_at != self.n and self.n > self._start_n:
            self._print(time.monotonic())

    def _print(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = (self.n - self._start_n) / elapsed
        parts = [self.desc, f"{self.n}/{self.total}" if self.total else str(self.n)]
        if self.total:
            parts.append(f"({100 * self.n / self.total:.0f}%)")
        parts.append(f"{rate:.3g} {self.unit}/s")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {_duration((self.total - self.n) / rate)}")
        else:
            parts.append(f"in {_duration(elapsed)}")
        if self._postfix:
            parts.append(self._postfix)
        print(" ".join(parts), file=self.file, flush=True)
        self._printed_at = self.n


def progress_bar(
    *, total: int | None, desc: str, enabled: bool = True, initial: int = 0, **kwargs: Any
) -> Any:
    """A tqdm bar on a terminal, :class:`PlainProgress` lines otherwise, or nothing.

    Args:
        total: the count at completion.
        desc: the label.
        enabled: ``False`` gives a silent reporter (same methods).
        initial: the count already done.
        **kwargs: passed to tqdm (e.g. ``unit``); ``interval`` to the plain reporter.
    """
    interval = float(kwargs.pop("interval", 30.0))
    stream = sys.stderr
    if enabled and not (hasattr(stream, "isatty") and stream.isatty()):
        return PlainProgress(
            total=total, desc=desc, file=stream, interval=interval, initial=initial,
            unit=kwargs.get("unit", "it"),
        )  # fmt: skip
    return tqdm(
        total=total,
        desc=desc,
        disable=not enabled,
        file=stream,
        dynamic_ncols=True,
        initial=initial,
        **{"leave": True, **kwargs},
    )
