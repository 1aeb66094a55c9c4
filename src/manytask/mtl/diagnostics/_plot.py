"""Figures with matplotlib's object API (no pyplot, no global state) and their PNG bytes."""

from __future__ import annotations

import io
from typing import Any

__all__ = ["figure", "png"]


def figure(width: float, height: float) -> Any:
    """A new ``matplotlib.figure.Figure`` (imported lazily)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def png(fig: Any, dpi: int = 110) -> bytes:
    """The PNG bytes of ``fig`` (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
