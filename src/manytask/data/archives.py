"""Generic helpers for data archives: safe downloads, content digests and atomic writes.

Nothing here knows about a particular data set. The rules they enforce:

- A download goes to a temporary file in the destination folder, is checked by the caller's
  ``verify`` callback, and only then is renamed over the final name (``os.replace``, atomic
  on one file system). Whatever goes wrong (HTTP error, short body, bad content, Ctrl-C),
  the temporary file is deleted, so a partial download is never found under the final name.
- Archives are identified by a *content digest* (:func:`zip_content_digest`): sha256 over the
  sorted member names and member bytes, not over the zip file's bytes, so a re-packed zip
  with the same files has the same digest.
- Derived files (caches) are written through :func:`atomic_output` (temp file + rename).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import secrets
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from manytask.progress import progress_bar

__all__ = [
    "ArchiveError",
    "atomic_output",
    "download_file",
    "read_zip_members",
    "zip_content_digest",
]

_CHUNK = 1 << 16


class ArchiveError(ValueError):
    """A data archive is missing, truncated, corrupt, of the wrong content or layout.

    The message names the file, what was wrong, and what to do about it.
    """


def _is_junk(name: str) -> bool:
    """Members that archivers add by themselves (macOS metadata), ignored everywhere."""
    base = name.rsplit("/", 1)[-1]
    return name.startswith("__MACOSX/") or base.startswith("._") or base == ".DS_Store"


def read_zip_members(
    path: str | os.PathLike[str], suffix: str, *, hint: str = ""
) -> list[tuple[str, bytes]]:
    """Read every member whose name ends with ``suffix``, sorted by name.

    Directory entries and macOS metadata (``__MACOSX/``, ``._*``, ``.DS_Store``) are skipped.
    Every member is fully read, so zipfile checks its CRC-32.

    Args:
        path: the zip file.
        suffix: e.g. ``".png"``.
        hint: what the user should do if the file is bad; appended to error messages.

    Returns:
        ``[(member name, member bytes), ...]`` sorted by name.

    Raises:
        ArchiveError: the file is missing, not a zip, truncated, or a member fails its CRC.
    """
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"{path}: file not found. {hint}".strip())
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [
                i
                for i in zf.infolist()
                if not i.is_dir() and i.filename.endswith(suffix) and not _is_junk(i.filename)
            ]
            infos.sort(key=lambda i: i.filename)
            return [(i.filename, zf.read(i)) for i in infos]
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise ArchiveError(
            f"{path}: not a readable zip archive (truncated or corrupt: {exc}). {hint}".strip()
        ) from exc


def digest_members(members: list[tuple[str, bytes]]) -> str:
    """sha256 over ``(name, bytes)`` pairs in the given order, each length-prefixed."""
    h = hashlib.sha256()
    for name, data in members:
        raw = name.encode("utf-8")
        h.update(len(raw).to_bytes(8, "little"))
        h.update(raw)
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def zip_content_digest(path: str | os.PathLike[str], suffix: str, *, hint: str = "") -> str:
    """Content digest of a zip: sha256 over its sorted ``suffix`` members (name and bytes).

    Independent of compression, member order, timestamps and directory entries, so it is
    stable when an archive is rebuilt from the same files.

    Raises:
        ArchiveError: as :func:`read_zip_members`.
    """
    return digest_members(read_zip_members(path, suffix, hint=hint))


@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` if the block succeeds.

    If the block raises (or is interrupted) the temporary file is removed and ``dest`` is
    left as it was.

    Example:
        >>> import pathlib, tempfile
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_output(d / "x.txt") as tmp:
        ...     _ = tmp.write_text("hello")
        >>> (d / "x.txt").read_text()
        'hello'
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would stick to the final file; "x" keeps the umask's mode.
    tmp = dest.parent / f".{dest.name}.{secrets.token_hex(6)}.part"
    tmp.open("xb").close()
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    *,
    verify: Callable[[Path], object] | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    hint: str = "",
) -> Path:
    """Download ``url`` to ``dest`` through a verified temporary file.

    The body is streamed into a temporary file in ``dest``'s folder; its length is checked
    against ``Content-Length``; then ``verify(tmp_path)`` runs (it should raise
    :class:`ArchiveError` on bad content); only then is the file renamed to ``dest``.

    Args:
        url: what to fetch (``http(s)://`` or ``file://``).
        dest: the final file name.
        verify: a callback that raises if the downloaded file is not what was expected.
        progress: show a tqdm progress bar.
        timeout: socket timeout in seconds.
        hint: what the user should do on failure; appended to error messages.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        ArchiveError: HTTP error, network error, short body, or ``verify`` failed. No file is
            left behind in any of these cases.
    """
    dest = Path(dest)
    with atomic_output(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                received = 0
                with (
                    open(tmp, "wb") as out,
                    progress_bar(
                        total=total,
                        unit="B",
                        unit_scale=True,
                        desc=dest.name,
                        enabled=progress,
                        leave=False,
                    ) as bar,
                ):
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
        except urllib.error.HTTPError as exc:
            raise ArchiveError(
                f"{dest.name}: download from {url} failed with HTTP {exc.code} ({exc.reason}). "
                f"Check the URL or mirror. {hint}".strip()
            ) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            # ValueError: a malformed URL.
            raise ArchiveError(
                f"{dest.name}: download from {url} failed ({type(exc).__name__}: {exc}); "
                f"nothing was saved. {hint}".strip()
            ) from exc
        except http.client.HTTPException as exc:  # e.g. IncompleteRead on a short body
            raise ArchiveError(
                f"{dest.name}: download from {url} failed ({type(exc).__name__}: {exc}); "
                f"nothing was saved. {hint}".strip()
            ) from exc
        if total is not None and received != total:
            raise ArchiveError(
                f"{dest.name}: download from {url} was cut short ({received} of {total} "
                f"bytes); nothing was saved. {hint}".strip()
            )
        if verify is not None:
            verify(tmp)
    return dest
