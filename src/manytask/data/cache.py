"""The decoded cache: arrays built once from a data set's source files, kept as ``.npz``.

A cache file is ``<cache_dir>/<folder>/<stem>-<key>.npz`` where ``key`` is the first 16 hex
digits of the sha256 of a JSON list: the source files' names, sizes and modification times
(:func:`manytask.data.sources.source_key`) and every parameter the decoding depends on
(image size, seed, format version, ...). Hence:

- a changed source file, a new parameter value or a bumped format version gives another key,
  so the arrays are rebuilt, and older files of the same ``stem`` are removed;
- a file that cannot be read back (truncated, damaged) is rebuilt, never trusted;
- files are written through :func:`~manytask.data.archives.atomic_output` (temporary file +
  rename), so an interrupted build never leaves a half-written cache under the final name;
- ``.npz`` is read with ``allow_pickle=False``: a cache holds plain arrays only.

The cache lives in the cache directory (:func:`manytask.data.paths.cache_dir`), never in the
data directory, so a read-only shared data folder still works.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from manytask.data.archives import atomic_output

__all__ = ["cache_key", "cached_arrays"]

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


def cache_key(parts: Sequence[Any]) -> str:
    """16 hex digits identifying ``parts`` (anything JSON can encode).

    Example:
        >>> cache_key([1, "mnist", [["a.gz", 10, 5]]]) == cache_key([1, "mnist", [["a.gz", 10, 5]]])
        True
        >>> len(cache_key([2]))
        16
    """
    return hashlib.sha256(json.dumps(list(parts)).encode()).hexdigest()[:16]


def cached_arrays(
    folder: Path,
    stem: str,
    key_parts: Sequence[Any],
    build: Callable[[], Mapping[str, np.ndarray]],
    *,
    encode: Callable[[Mapping[str, np.ndarray]], Mapping[str, Any]] | None = None,
    decode: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]] | None = None,
) -> Arrays:
    """Arrays from ``<folder>/<stem>-<key>.npz``, or ``build()`` them and write that file.

    Args:
        folder: the data set's cache folder (created if needed).
        stem: file name prefix, e.g. ``"mnist"`` or ``"omniglot-28px"``; other files with the
            same stem and another key are stale and removed after a build.
        key_parts: everything the arrays depend on (see the module docstring).
        build: makes the arrays (reads, checks and decodes the sources).
        encode: optional transform before saving (e.g. bit-packing); ``decode`` undoes it.
        decode: optional transform after loading.

    Returns:
        The arrays (``decode``'d when read back from the file, as built otherwise).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> a = cached_arrays(d, "demo", [1], lambda: {"x": np.arange(3)})
        >>> b = cached_arrays(d, "demo", [1], lambda: 1 / 0)  # read back, not rebuilt
        >>> b["x"].tolist(), sorted(p.name[:5] for p in d.iterdir())
        ([0, 1, 2], ['demo-'])
    """
    key = cache_key(key_parts)
    path = folder / f"{stem}-{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as npz:
                loaded: Mapping[str, np.ndarray] = {k: npz[k] for k in npz.files}
            return dict(decode(loaded) if decode is not None else loaded)
        except Exception as exc:  # a damaged cache is rebuilt, never trusted
            logger.warning("ignoring unreadable cache %s (%s); rebuilding", path, exc)
    arrays = dict(build())
    to_save = encode(arrays) if encode is not None else arrays
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **to_save)
    stale = re.compile(re.escape(stem) + r"-[0-9a-f]{16}\.npz")
    for other in folder.glob(f"{stem}-*.npz"):
        if other != path and stale.fullmatch(other.name):
            other.unlink(missing_ok=True)
    return arrays
