"""Progress bars (tqdm) that can be switched off for CI and logs."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(*, total: int | None, desc: str, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar with ETA and rate on stderr; ``enabled=False`` gives a silent one."""
    return tqdm(
        total=total,
        desc=desc,
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=True,
        **kwargs,
    )
