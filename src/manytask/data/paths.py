"""Where manytask looks for data sets and where it keeps decoded caches.

Resolution order for the data directory (raw archives, downloads):

1. an explicit ``data_dir`` argument,
2. the ``MANYTASK_DATA`` environment variable,
3. a per-user folder: ``$XDG_CACHE_HOME/manytask/data`` (``~/.cache/manytask/data``).

Decoded stores (``.npz`` caches) go to the cache directory, resolved the same way with
``cache_dir`` / ``MANYTASK_CACHE`` / ``~/.cache/manytask/stores``. Keeping the two apart lets
the data directory be read-only (a shared mount) while caches still work.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "data_dir"]

DATA_ENV = "MANYTASK_DATA"
CACHE_ENV = "MANYTASK_CACHE"


def _user_cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg) if xdg else Path.home() / ".cache"
    return root / "manytask"


def data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the data directory: argument, else ``$MANYTASK_DATA``, else the user cache.

    Args:
        data_dir: an explicit folder; wins over everything else.

    Returns:
        The folder as an absolute path (it need not exist yet).
    """
    if data_dir is not None:
        return Path(data_dir).expanduser().resolve()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return _user_cache_root() / "data"


def cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the folder for decoded stores: argument, else ``$MANYTASK_CACHE``, else cache."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser().resolve()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return _user_cache_root() / "stores"
