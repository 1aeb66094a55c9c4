"""FileSet (find, read/check, verify, fetch through the loopback server) and cached_arrays."""

from __future__ import annotations

import bz2
import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from manytask.data.archives import ArchiveError
from manytask.data.cache import cache_key, cached_arrays
from manytask.data.sources import FileSet, RemoteFile

CONTENT = b"some data set content\n" * 50
MD5 = hashlib.md5(CONTENT).hexdigest()
RAW = b"a plain table\n1,2,3\n"
SHA = hashlib.sha256(RAW).hexdigest()


def _files(urls: tuple[str, ...] = ()) -> FileSet:
    return FileSet(
        "demo",
        "demo",
        (
            RemoteFile("data.gz", content_md5=MD5, also_as=("data.bz2", "data")),
            RemoteFile("table.csv", sha256=SHA),
        ),
        urls,
    )


def test_remote_file_needs_a_check() -> None:
    with pytest.raises(ValueError, match="cannot be trusted"):
        RemoteFile("x.bin")


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("data.gz", gzip.compress(CONTENT, compresslevel=9)),
        ("data.gz", gzip.compress(CONTENT, compresslevel=1, mtime=12345)),  # other bytes
        ("data.bz2", bz2.compress(CONTENT)),
        ("data", CONTENT),
    ],
)
def test_content_md5_accepts_any_compression(tmp_path: Path, name: str, payload: bytes) -> None:
    fs = _files()
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / name).write_bytes(payload)
    path = fs.find(tmp_path, "data.gz")
    assert path == tmp_path / "demo" / name
    assert fs.read(path, "data.gz") == CONTENT
    assert fs.verify(tmp_path)["data.gz"]["status"] == "ok"


def test_bad_files_name_the_file_and_the_fix(tmp_path: Path) -> None:
    fs = _files()
    (tmp_path / "table.csv").write_bytes(RAW + b"4,5,6\n")  # found directly in the data dir too
    (tmp_path / "data.gz").write_bytes(gzip.compress(CONTENT[:-1]))
    report = fs.verify(tmp_path)
    assert report["table.csv"]["status"] == "invalid"
    assert "table.csv" in report["table.csv"]["message"]
    assert "sha256" in report["table.csv"]["message"]
    assert "manytask data fetch demo" in report["table.csv"]["message"]
    assert "md5 of the decompressed content" in report["data.gz"]["message"]
    (tmp_path / "data.gz").write_bytes(gzip.compress(CONTENT)[:40])
    with pytest.raises(ArchiveError, match=r"data\.gz: not a readable gz file.*fetch demo"):
        fs.read(tmp_path / "data.gz", "data.gz")
    (tmp_path / "data.gz").unlink()
    assert fs.verify(tmp_path)["data.gz"]["status"] == "missing"
    with pytest.raises(ArchiveError, match=r"data\.gz: not found in .*manytask data fetch demo"):
        fs.require(tmp_path)
    with pytest.raises(ValueError, match=r"valid: \['data.gz', 'table.csv'\]"):
        fs.spec("nope")


def test_fetch_falls_back_to_the_next_mirror_and_keeps_good_files(
    tmp_path: Path, http_server: tuple[str, dict]
) -> None:
    base, routes = http_server
    gz = gzip.compress(CONTENT)
    routes["/b/data.gz"] = (gz, len(gz))
    routes["/b/table.csv"] = (RAW, len(RAW))
    fs = _files((f"{base}/a", f"{base}/b"))  # /a answers 404 for everything
    paths = fs.fetch(tmp_path, progress=False)
    assert paths == [tmp_path / "demo" / "data.gz", tmp_path / "demo" / "table.csv"]
    assert {n: e["status"] for n, e in fs.verify(tmp_path).items()} == {
        "data.gz": "ok",
        "table.csv": "ok",
    }
    routes.clear()  # present and verified: nothing is downloaded again
    assert fs.fetch(tmp_path, progress=False) == paths


@pytest.mark.parametrize("case", ["wrong_content", "truncated", "not_gzip"])
def test_failed_fetch_leaves_nothing(
    tmp_path: Path, http_server: tuple[str, dict], case: str
) -> None:
    base, routes = http_server
    gz = gzip.compress(CONTENT)
    body = {
        "wrong_content": (gzip.compress(b"other"), None),
        "truncated": (gz[:20], len(gz)),
        "not_gzip": (b"<html>mirror error page</html>", None),
    }[case]
    routes["/data.gz"] = (body[0], body[1] or len(body[0]))
    pattern = {
        "wrong_content": r"data\.gz: the download's decompressed md5 is",
        "truncated": r"data\.gz: download from .* was cut short",
        "not_gzip": r"data\.gz: the download is not a readable gz file",
    }[case]
    with pytest.raises(ArchiveError, match=pattern):
        _files((base,)).fetch(tmp_path, names=["data.gz"], progress=False)
    assert list((tmp_path / "demo").iterdir()) == []


def test_fetch_reports_every_failed_mirror(tmp_path: Path, http_server: tuple[str, dict]) -> None:
    base, _ = http_server
    with pytest.raises(ArchiveError, match=r"every source failed: \(1\).*404.*\(2\).*404"):
        _files((f"{base}/a", f"{base}/b")).fetch(tmp_path, names=["table.csv"], progress=False)


def test_cached_arrays_builds_once_rebuilds_damaged_and_drops_stale(tmp_path: Path) -> None:
    calls: list[int] = []

    def build() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"x": np.arange(4) * len(calls)}

    a = cached_arrays(tmp_path, "demo", [1, "a"], build)
    b = cached_arrays(tmp_path, "demo", [1, "a"], build)
    assert calls == [1] and np.array_equal(a["x"], b["x"])
    [path] = tmp_path.glob("demo-*.npz")
    assert path.name == f"demo-{cache_key([1, 'a'])}.npz"
    path.write_bytes(path.read_bytes()[:50])  # damaged: rebuilt, never trusted
    cached_arrays(tmp_path, "demo", [1, "a"], build)
    assert calls == [1, 1]
    (tmp_path / "demo-extra-0123456789abcdef.npz").write_bytes(b"another stem's file")
    cached_arrays(tmp_path, "demo", [2, "a"], build)  # new key: rebuilt, the old one removed
    assert calls == [1, 1, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"demo-{cache_key([2, 'a'])}.npz", "demo-extra-0123456789abcdef.npz"]
    )
    enc = cached_arrays(
        tmp_path / "e",
        "enc",
        [0],
        lambda: {"x": np.ones(3)},
        encode=lambda a: {"y": a["x"] * 2},
        decode=lambda a: {"x": a["y"] / 2},
    )
    again = cached_arrays(
        tmp_path / "e", "enc", [0], lambda: {}, decode=lambda a: {"x": a["y"] / 2}
    )
    assert np.array_equal(enc["x"], again["x"])
