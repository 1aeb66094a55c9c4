"""Tests for the generic archive helpers: atomic output, digests, safe downloads."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from manytask.data.archives import (
    ArchiveError,
    atomic_output,
    download_file,
    read_zip_members,
    zip_content_digest,
)


def _zip(path: Path, members: dict[str, bytes], *, compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


MEMBERS = {"top/a.png": b"A" * 300, "top/b.png": b"B" * 200, "top/readme.txt": b"x"}


def test_atomic_output_writes_or_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "out.bin"
    with atomic_output(dest) as tmp:
        tmp.write_bytes(b"new")
    assert dest.read_bytes() == b"new"
    with pytest.raises(RuntimeError), atomic_output(dest) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert dest.read_bytes() == b"new"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.bin"]


def test_content_digest_ignores_packing_but_not_content(tmp_path: Path) -> None:
    a = zip_content_digest(_zip(tmp_path / "a.zip", MEMBERS), ".png")
    reordered = dict(reversed(list(MEMBERS.items())))
    b = zip_content_digest(
        _zip(tmp_path / "b.zip", reordered, compression=zipfile.ZIP_DEFLATED), ".png"
    )
    assert a == b
    changed = {**MEMBERS, "top/b.png": b"C" * 200}
    assert zip_content_digest(_zip(tmp_path / "c.zip", changed), ".png") != a
    renamed = {"top/a.png": MEMBERS["top/a.png"], "top/z.png": MEMBERS["top/b.png"]}
    assert zip_content_digest(_zip(tmp_path / "d.zip", renamed), ".png") != a
    assert [n for n, _ in read_zip_members(tmp_path / "a.zip", ".png")] == [
        "top/a.png",
        "top/b.png",
    ]


def test_truncated_flipped_and_missing_zip(tmp_path: Path) -> None:
    good = _zip(tmp_path / "good.zip", MEMBERS).read_bytes()
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ArchiveError, match=r"truncated\.zip.*not a readable zip.*do this"):
        read_zip_members(truncated, ".png", hint="do this")
    flipped = bytearray(good)
    pos = good.index(b"A" * 300) + 10
    flipped[pos] ^= 0xFF
    (tmp_path / "flipped.zip").write_bytes(bytes(flipped))
    with pytest.raises(ArchiveError, match=r"flipped\.zip.*CRC"):
        read_zip_members(tmp_path / "flipped.zip", ".png")
    with pytest.raises(ArchiveError, match=r"absent\.zip: file not found"):
        read_zip_members(tmp_path / "absent.zip", ".png")


def test_download_success_and_verify(tmp_path: Path, http_server: tuple[str, dict]) -> None:
    base, routes = http_server
    body = _zip(tmp_path / "src.zip", MEMBERS).read_bytes()
    routes["/x.zip"] = (body, len(body))
    seen: list[Path] = []
    dest = download_file(
        f"{base}/x.zip", tmp_path / "dl" / "x.zip", verify=seen.append, progress=False
    )
    assert dest.read_bytes() == body
    assert seen and seen[0] != dest and seen[0].parent == dest.parent  # verified as a temp file
    assert [p.name for p in dest.parent.iterdir()] == ["x.zip"]


def _fails(verify: Path) -> None:
    raise ArchiveError(f"{verify}: wrong content")


@pytest.mark.parametrize("case", ["truncated", "bad_content", "404"])
def test_download_failures_leave_nothing(
    tmp_path: Path, http_server: tuple[str, dict], case: str
) -> None:
    base, routes = http_server
    body = b"z" * 100_000
    routes["/x.zip"] = (body[:1000], len(body)) if case == "truncated" else (body, len(body))
    url = f"{base}/{'missing' if case == '404' else 'x'}.zip"
    folder = tmp_path / "dl"
    pattern = {"truncated": "cut short", "bad_content": "wrong content", "404": "HTTP 404"}[case]
    with pytest.raises(ArchiveError, match=pattern):
        download_file(
            url,
            folder / "x.zip",
            verify=_fails if case == "bad_content" else None,
            progress=False,
            hint="retry",
        )
    assert list(folder.iterdir()) == []


def test_unreachable_server_is_an_archive_error(
    tmp_path: Path, http_server: tuple[str, dict]
) -> None:
    with pytest.raises(ArchiveError, match=r"download from http://127\.0\.0\.1:9/x\.zip failed"):
        download_file("http://127.0.0.1:9/x.zip", tmp_path / "x.zip", progress=False, timeout=5)
    assert list(tmp_path.iterdir()) == []
