"""Files a data set is built from: where they live, how they are checked, how they are fetched.

Every data set of manytask is made of a few source files (archives, IDX files, ARFF tables,
CSV dumps) that live in one folder of the data directory (:func:`manytask.data.paths.data_dir`):
``<data_dir>/<folder>/<name>`` (or directly ``<data_dir>/<name>``). A :class:`FileSet` names
them, with what each must contain, and does the four things every data set needs:

- :meth:`FileSet.find` / :meth:`FileSet.require`: locate the files (a missing file is an
  :class:`~manytask.data.archives.ArchiveError` naming the file and the command that fetches it);
- :meth:`FileSet.read`: read one file, check it and return its (decompressed) bytes in one pass;
- :meth:`FileSet.verify`: a report per file (``ok`` / ``missing`` / ``invalid``) that never raises;
- :meth:`FileSet.fetch`: download what is missing or wrong, through a temporary file that is
  checked and only then renamed (:func:`~manytask.data.archives.download_file`), trying the
  base URLs in order.

How a file is checked (:class:`RemoteFile`), in this order:

1. ``check``: a callable for content-level checks (Omniglot's zip content digest);
2. ``sha256``: the digest of the bytes as stored;
3. ``content_md5``: the md5 of the *decompressed* content of a ``.gz`` / ``.bz2`` file (or of
   the file itself when it is not compressed). This is what the published checksums of MNIST,
   Fashion-MNIST and UCI Census-Income describe, and it holds whichever compressor made the
   file: a re-gzipped copy passes as long as its content is byte-identical to the original.

Decoded forms are cached by :func:`manytask.data.cache.cached_arrays`, keyed by
:func:`source_key` (the files' names, sizes and modification times) plus the decoding
parameters, so the check runs when the cache is built, not at every load.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import hashlib
import logging
import lzma
import os
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from manytask.data.archives import ArchiveError, download_file
from manytask.data.paths import data_dir as resolve_data_dir

__all__ = ["FileSet", "RemoteFile", "decompress", "source_key"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteFile:
    """One source file of a data set and what it must contain.

    Attributes:
        name: its name in the data set's folder (and, by default, on the server).
        sha256: hex digest of the file's bytes as stored, or None.
        content_md5: hex md5 of the decompressed content (``.gz`` / ``.bz2`` / ``.xz`` are
            decompressed; other files are hashed as they are), or None.
        also_as: other names accepted in the folder for the same content (e.g. a ``.bz2``
            copy of a file published as ``.gz``); only checked by ``content_md5``.
        remote: the file's name under the base URL, if it differs from ``name``.
        check: optional callable ``check(path)`` that raises :class:`ArchiveError` when the
            content is wrong; runs instead of the digests.

    Example:
        >>> RemoteFile("t10k-labels-idx1-ubyte.gz", content_md5="ec29112dd5afa0611ce80d1b7f02629c")
        RemoteFile('t10k-labels-idx1-ubyte.gz', content_md5=ec29112d...)
    """

    name: str
    sha256: str | None = None
    content_md5: str | None = None
    also_as: tuple[str, ...] = ()
    remote: str | None = None
    check: Callable[[Path], object] | None = None

    def __post_init__(self) -> None:
        if self.sha256 is None and self.content_md5 is None and self.check is None:
            raise ValueError(
                f"RemoteFile({self.name!r}) needs sha256, content_md5 or check; a file that "
                "nothing verifies cannot be trusted"
            )

    def __repr__(self) -> str:
        parts = [repr(self.name)]
        if self.sha256:
            parts.append(f"sha256={self.sha256[:8]}...")
        if self.content_md5:
            parts.append(f"content_md5={self.content_md5[:8]}...")
        if self.check is not None:
            parts.append("check=custom")
        return f"RemoteFile({', '.join(parts)})"

    @property
    def names(self) -> tuple[str, ...]:
        """Every accepted local name, the canonical one first."""
        return (self.name, *self.also_as)


def decompress(path: Path, raw: bytes, hint: str = "") -> bytes:
    """The content of ``raw`` read from ``path``: gunzipped / bunzipped / unxz'd by suffix.

    Raises:
        ArchiveError: the file is not a readable archive of its kind (truncated or corrupt).
    """
    opener: dict[str, Callable[[bytes], bytes]] = {
        ".gz": gzip.decompress,
        ".bz2": bz2.decompress,
        ".xz": lzma.decompress,
    }
    fn = opener.get(path.suffix)
    if fn is None:
        return raw
    try:
        return fn(raw)
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
        msg = f"{path}: not a readable {path.suffix[1:]} file (truncated or corrupt: {exc})."
        raise ArchiveError(f"{msg} {hint}".strip()) from exc


def source_key(paths: Mapping[str, Path]) -> list[list[Any]]:
    """``[[name, size, mtime_ns], ...]`` of the files, in the mapping's order (cache keys)."""
    out: list[list[Any]] = []
    for name, path in paths.items():
        st = path.stat()
        out.append([name, st.st_size, st.st_mtime_ns])
    return out


@dataclass(frozen=True)
class FileSet:
    """The source files of one data set in ``<data_dir>/<folder>/``.

    Attributes:
        dataset: the data set's registry name, used in messages
            (``manytask data fetch <dataset>``).
        folder: its sub-folder of the data directory.
        files: the files, see :class:`RemoteFile`.
        urls: base URLs tried in order by :meth:`fetch` (``<url>/<remote name>``); the first
            is the official source.

    Example:
        >>> import tempfile
        >>> fs = FileSet("demo", "demo", (RemoteFile("a.txt", sha256="0" * 64),), ())
        >>> fs.verify(tempfile.mkdtemp())["a.txt"]["status"]
        'missing'
    """

    dataset: str
    folder: str
    files: tuple[RemoteFile, ...]
    urls: tuple[str, ...]

    @property
    def hint(self) -> str:
        """What a user should do about a missing or bad file."""
        return (
            f"Delete it if present and run `manytask data fetch {self.dataset}` "
            "(or pass download=True)."
        )

    def spec(self, name: str) -> RemoteFile:
        """The :class:`RemoteFile` called ``name`` (unknown names list the valid ones)."""
        for f in self.files:
            if f.name == name:
                return f
        raise ValueError(
            f"names: {name!r} is not a file of {self.dataset}; valid: "
            f"{[f.name for f in self.files]}"
        )

    def find(self, root: Path, name: str) -> Path | None:
        """The first existing candidate path for file ``name`` under ``root``, or None."""
        spec = self.spec(name)
        for local in spec.names:
            for candidate in (root / self.folder / local, root / local):
                if candidate.is_file():
                    return candidate
        return None

    def require(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        names: Iterable[str] | None = None,
        download: bool = False,
        progress: bool = False,
    ) -> dict[str, Path]:
        """Paths of the files (present, not yet read); fetch them first with ``download``.

        Raises:
            ArchiveError: a file is missing; the message names it, where it was looked for
                and how to fetch it.
        """
        root = resolve_data_dir(data_dir)
        wanted = list(names) if names is not None else [f.name for f in self.files]
        if download:
            self.fetch(root, names=wanted, progress=progress)
        paths: dict[str, Path] = {}
        for name in wanted:
            path = self.find(root, name)
            if path is None:
                raise ArchiveError(
                    f"{name}: not found in {root / self.folder} or {root}. Run "
                    f"`manytask data fetch {self.dataset}` (or pass download=True), or pass "
                    "data_dir."
                )
            paths[name] = path
        return paths

    def read(self, path: Path, name: str) -> bytes:
        """Read file ``name`` from ``path``, check it, return its decompressed content.

        Raises:
            ArchiveError: unreadable, wrong digest, not a readable compressed file; the
                message names the file, the expected and found digests, and the fix.
        """
        spec = self.spec(name)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ArchiveError(f"{path}: cannot be read ({exc}). {self.hint}") from exc
        if spec.check is not None:
            spec.check(path)
            return decompress(path, raw, self.hint)
        if spec.sha256 is not None:
            got = hashlib.sha256(raw).hexdigest()
            if got == spec.sha256:
                return decompress(path, raw, self.hint)
            if spec.content_md5 is None:
                raise ArchiveError(
                    f"{path}: sha256 {got} does not match the expected {spec.sha256} for "
                    f"{spec.name} of {self.dataset} (a changed, truncated or wrong file). "
                    f"{self.hint}"
                )
        content = decompress(path, raw, self.hint)
        assert spec.content_md5 is not None  # RemoteFile.__post_init__ guarantees a check
        got = hashlib.md5(content, usedforsecurity=False).hexdigest()
        if got != spec.content_md5:
            raise ArchiveError(
                f"{path}: md5 of the decompressed content is {got}, expected "
                f"{spec.content_md5} for {spec.name} of {self.dataset} (a changed, truncated "
                f"or wrong file). {self.hint}"
            )
        return content

    def verify(self, data_dir: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
        """Check every file; never raises for bad files.

        Returns:
            ``{file name: {"status": "ok" | "missing" | "invalid", "path": str | None,
            "message": str}}``.
        """
        root = resolve_data_dir(data_dir)
        report: dict[str, dict[str, Any]] = {}
        for spec in self.files:
            path = self.find(root, spec.name)
            entry: dict[str, Any] = {
                "status": "missing",
                "path": None if path is None else str(path),
                "message": f"not found in {root / self.folder} or {root}; run "
                f"`manytask data fetch {self.dataset}`",
            }
            if path is not None:
                try:
                    self.read(path, spec.name)
                except ArchiveError as exc:
                    entry.update(status="invalid", message=str(exc))
                else:
                    entry.update(status="ok", message="verified")
            report[spec.name] = entry
        return report

    def fetch(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        names: Iterable[str] | None = None,
        base_url: str | None = None,
        progress: bool = True,
    ) -> list[Path]:
        """Make sure the files are in ``<data_dir>/<folder>/``, verified.

        A file already present (under any accepted name) that passes its check is kept.
        Otherwise it is downloaded from ``<base>/<remote name>`` for each base URL in turn
        (``base_url`` if given, else :attr:`urls`) into a temporary file that is checked and
        only then renamed; a failed, short or wrong download leaves nothing behind.

        Returns:
            The verified paths, in the order of ``names`` (default: every file).

        Raises:
            ValueError: an unknown file name.
            ArchiveError: every source failed; the message gives each failure.
        """
        root = resolve_data_dir(data_dir)
        wanted = list(names) if names is not None else [f.name for f in self.files]
        specs = [self.spec(n) for n in wanted]
        bases = [base_url] if base_url else list(self.urls)
        if not bases:
            raise ArchiveError(
                f"{self.dataset}: no download source is known; put the files in "
                f"{root / self.folder} by hand or pass base_url."
            )
        paths = []
        for spec in specs:
            existing = self.find(root, spec.name)
            if existing is not None:
                try:
                    self.read(existing, spec.name)
                    paths.append(existing)
                    continue
                except ArchiveError as exc:
                    logger.warning("%s; downloading a fresh copy", exc)
            dest = root / self.folder / spec.name
            errors: list[ArchiveError] = []
            for base in bases:
                url = f"{base.rstrip('/')}/{spec.remote or spec.name}"
                logger.info("downloading %s to %s", url, dest)
                try:
                    download_file(
                        url,
                        dest,
                        verify=functools.partial(self._check_download, name=spec.name),
                        progress=progress,
                        hint=f"Retry `manytask data fetch {self.dataset}`, or pass a mirror "
                        "as base_url (`--url`).",
                    )
                except ArchiveError as exc:
                    errors.append(exc)
                    continue
                break
            else:
                if len(errors) == 1:
                    raise errors[0]
                raise ArchiveError(
                    f"{spec.name}: every source failed: "
                    + " | ".join(f"({i + 1}) {e}" for i, e in enumerate(errors))
                )
            paths.append(dest)
        return paths

    def _check_download(self, tmp: Path, *, name: str) -> None:
        # The temporary file has another name; check it as if it had the canonical one.
        spec = self.spec(name)
        if spec.check is not None:
            spec.check(tmp)
            return
        raw = tmp.read_bytes()
        if spec.sha256 is not None and hashlib.sha256(raw).hexdigest() == spec.sha256:
            return
        if spec.content_md5 is not None:
            fake = tmp.with_name(spec.name)  # only its suffix matters for decompress()
            try:
                content = decompress(fake, raw, self.hint)
            except ArchiveError as exc:
                raise ArchiveError(
                    f"{spec.name}: the download is not a readable {fake.suffix[1:]} file "
                    f"({exc.__cause__}); nothing was saved."
                ) from exc
            got = hashlib.md5(content, usedforsecurity=False).hexdigest()
            if got == spec.content_md5:
                return
            raise ArchiveError(
                f"{spec.name}: the download's decompressed md5 is {got}, expected "
                f"{spec.content_md5}; nothing was saved. Check the URL or mirror."
            )
        raise ArchiveError(
            f"{spec.name}: the download's sha256 is {hashlib.sha256(raw).hexdigest()}, "
            f"expected {spec.sha256}; nothing was saved. Check the URL or mirror."
        )
