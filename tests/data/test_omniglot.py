"""Tests for the Omniglot data layer: archives, verification, decoding, caches, splits.

Tests marked with ``shared_data`` run against the offline copies named by ``$MANYTASK_DATA``
(read only) and are skipped without it; the rest build tiny synthetic archives in tmp_path
and swap them in for the official ones (``_ARCHIVES`` holds the expected counts/digests).
"""

from __future__ import annotations

import io
import json
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from manytask.data import (
    ArchiveError,
    ImageStore,
    fetch_omniglot,
    load_image,
    load_omniglot,
    omniglot_split,
    verify_omniglot,
)
from manytask.data import omniglot as og

FETCH = "manytask data fetch omniglot"


# ---------------------------------------------------------------- synthetic archives


def _png(rng: np.random.Generator, size: int = 105) -> bytes:
    ink = rng.random((size, size)) < 0.1
    buf = io.BytesIO()
    Image.fromarray(~ink).save(buf, format="PNG")  # mode "1": True = white background
    return buf.getvalue()


def _make_archive(
    path: Path,
    top: str,
    alphabets: dict[str, int],
    *,
    seed: int = 0,
    drawers: int = 20,
    first_id: int = 1,
) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{top}/", b"")
        for alphabet, chars in alphabets.items():
            for c in range(1, chars + 1):
                for d in range(1, drawers + 1):
                    name = f"{top}/{alphabet}/character{c:02d}/{first_id + c:04d}_{d:02d}.png"
                    zf.writestr(name, _png(rng))
    return path


BG = {"Alpha": 2, "Beta": 1}
EV = {"Gamma": 2}


@pytest.fixture
def synthetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir with tiny background/evaluation archives that the loader accepts."""
    root = tmp_path / "data"
    bg = _make_archive(root / "omniglot" / "images_background.zip", "images_background", BG)
    ev = _make_archive(root / "images_evaluation.zip", "images_evaluation", EV, seed=1)
    for name, path, spec in (("images_background", bg, BG), ("images_evaluation", ev, EV)):
        digest = og.digest_members(og.read_zip_members(path, ".png"))
        monkeypatch.setitem(
            og._ARCHIVES, name, og._ArchiveSpec(len(spec), sum(spec.values()), digest)
        )
    return root


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No data dir, a fresh cache dir, and any network access fails the test."""
    monkeypatch.setenv("MANYTASK_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("MANYTASK_CACHE", str(tmp_path / "cache"))

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)


# ---------------------------------------------------------------- embedded copy


def test_embedded_loads_offline(offline: None) -> None:
    store = load_omniglot(progress=False)
    assert store.source == "omniglot:embedded"
    assert tuple(store.images.shape) == (1623, 20, 28, 28)
    assert store.images.dtype == torch.uint8
    assert set(torch.unique(store.images).tolist()) == {0, 255}
    ink = (store.images == 255).float().mean().item()
    assert 0.05 < ink < 0.3  # ink is the minority (polarity check)
    assert list(store.class_names) == sorted(store.class_names)
    assert len(store.alphabets) == 50
    assert all(
        store.class_names[i].split("/")[0] == store.alphabets[int(a)]
        for i, a in enumerate(store.alphabet_of)
    )
    assert torch.equal(store.drawers, torch.arange(1, 21).repeat(1623, 1))
    assert (og.Path(og.__file__).parent / "_embedded" / "LICENSE").read_text().count("Brenden Lake")


def test_embedded_file_is_small() -> None:
    path = Path(og.__file__).parent / "_embedded" / "omniglot28.npz.xz"
    assert path.stat().st_size <= 1_500_000


def test_bad_arguments(offline: None) -> None:
    with pytest.raises(ValueError, match="28x28 images only"):
        load_omniglot(105, source="embedded")
    with pytest.raises(ArchiveError, match=f"images_background.zip: not found.*{FETCH}"):
        load_omniglot(105)  # auto: no archives and no embedded copy at this size
    with pytest.raises(ValueError, match="source must be one of"):
        load_omniglot(source="web")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        load_omniglot(0)
    with pytest.raises(ArchiveError, match=f"not found.*{FETCH}"):
        load_omniglot(source="archives")


# ---------------------------------------------------------------- splits


@pytest.fixture(scope="module")
def embedded() -> ImageStore:
    return og._load_embedded()


def test_splits_sizes(embedded: ImageStore) -> None:
    parts = {p: omniglot_split(embedded, "vinyals", p) for p in ("train", "val", "test")}
    assert [len(parts[p]) for p in ("train", "val", "test")] == [1028, 172, 423]
    names = [set(s.class_names) for s in parts.values()]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert set().union(*names) == set(embedded.class_names)
    trainval = omniglot_split(embedded, "vinyals", "trainval")
    assert set(trainval.class_names) == names[0] | names[1]
    bg, ev = (omniglot_split(embedded, "lake", p) for p in ("background", "evaluation"))
    assert (len(bg), len(ev)) == (964, 659)
    assert names[2] <= set(ev.class_names)  # Vinyals test chars are evaluation characters
    for split, n in (("small1", 136), ("small2", 156)):
        train = omniglot_split(embedded, split, "train")  # type: ignore[arg-type]
        assert len(train) == n and set(train.class_names) <= set(bg.class_names)
        assert omniglot_split(embedded, split, "test").class_names == ev.class_names  # type: ignore[arg-type]


def test_split_errors_list_valid_values(embedded: ImageStore) -> None:
    with pytest.raises(ValueError, match=r"vinyals.*lake.*small1.*small2"):
        omniglot_split(embedded, "bogus", "train")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"train.*val.*test.*trainval"):
        omniglot_split(embedded, "vinyals", "background")


def test_shipped_split_lists_match_shared_files(shared_data: Path) -> None:
    derived = og._derive_split_lists(shared_data)
    for name, key in (("omniglot_vinyals.json", "vinyals"), ("omniglot_lake.json", "lake")):
        shipped = json.loads((Path(og.__file__).parent / "splits" / name).read_text())
        assert "MIT" in shipped["license"] and "Copyright" in shipped["copyright"]
        for part, names in derived[key].items():
            assert shipped[part] == names, (name, part)
    vin = shared_data / "omniglot" / "splits_vinyals"
    lines = (vin / "trainval.txt").read_text().split()
    assert sorted({"/".join(x.split("/")[:2]) for x in lines}) == sorted(
        derived["vinyals"]["train"] + derived["vinyals"]["val"]
    )


# ---------------------------------------------------------------- shared archives


def test_embedded_equals_omniglot_resized(shared_data: Path, embedded: ImageStore) -> None:
    """All 32,460 images of MAML's ``omniglot_resized.zip`` equal the embedded array.

    Each 28x28 mode-"1" PNG ``omniglot_resized/<Alphabet>/characterNN/NNNN_DD.png`` is decoded
    with the store's polarity (``False`` = ink -> 255) and compared pixel for pixel with
    ``images[class_names.index("Alphabet/characterNN"), DD - 1]``; every store entry must be
    covered exactly once.
    """
    index = {n: i for i, n in enumerate(embedded.class_names)}
    seen = np.zeros((1623, 20), dtype=bool)
    expected = embedded.images.numpy()
    members = og.read_zip_members(shared_data / "omniglot_resized" / "omniglot_resized.zip", ".png")
    assert len(members) == 32460
    for name, data in members:
        top, alphabet, char, file = name.split("/")
        assert top == "omniglot_resized"
        c, d = index[f"{alphabet}/{char}"], int(file[-6:-4]) - 1
        with Image.open(io.BytesIO(data)) as im:
            assert im.mode == "1" and im.size == (28, 28)
            got = np.where(np.asarray(im, dtype=bool), 0, 255).astype(np.uint8)
        assert np.array_equal(got, expected[c, d]), name
        seen[c, d] = True
    assert seen.all()


def test_verify_shared_archives(shared_data: Path) -> None:
    report = verify_omniglot(shared_data)
    counts = {
        n: (r["status"], r["alphabets"], r["characters"], r["images"]) for n, r in report.items()
    }
    assert counts == {
        "images_background": ("ok", 30, 964, 19280),
        "images_evaluation": ("ok", 20, 659, 13180),
        "images_background_small1": ("ok", 5, 136, 2720),
        "images_background_small2": ("ok", 5, 156, 3120),
    }


def test_archives_load_equals_embedded_and_is_cached(
    shared_data: Path, embedded: ImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = load_omniglot(
        28, data_dir=shared_data, cache_dir=tmp_path, source="archives", progress=False
    )
    assert store.source.startswith("omniglot:archives:")
    assert store.class_names == embedded.class_names and store.alphabets == embedded.alphabets
    assert torch.equal(store.images, embedded.images)
    assert torch.equal(store.alphabet_of, embedded.alphabet_of)
    assert len(list((tmp_path / "omniglot").glob("*.npz"))) == 1

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again despite a valid cache")

    monkeypatch.setattr(og, "_decode_archives", fail)
    again = load_omniglot(28, data_dir=shared_data, cache_dir=tmp_path, progress=False)
    assert again.source == store.source and torch.equal(again.images, store.images)

    # load_image gives exactly the store entry, at 28 and at 105 (no resize).
    with zipfile.ZipFile(shared_data / "omniglot" / "images_evaluation.zip") as zf:
        member = "images_evaluation/Angelic/character03/0967_07.png"
        (tmp_path / "x.png").write_bytes(zf.read(member))
    c = store.class_names.index("Angelic/character03")
    assert torch.equal(load_image(tmp_path / "x.png"), store.images[c, 6])
    full = load_image(tmp_path / "x.png", 105)
    assert full.shape == (105, 105) and set(torch.unique(full).tolist()) == {0, 255}


@pytest.mark.slow
def test_full_size_archives(shared_data: Path, tmp_path: Path) -> None:
    store = load_omniglot(105, data_dir=shared_data, cache_dir=tmp_path, progress=False)
    assert tuple(store.images.shape) == (1623, 20, 105, 105)


def test_fetch_real_small_archive(
    shared_data: Path,
    tmp_path: Path,
    http_server: tuple[str, dict],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, routes = http_server
    small1 = (shared_data / "omniglot" / "images_background_small1.zip").read_bytes()
    small2 = (shared_data / "omniglot" / "images_background_small2.zip").read_bytes()
    routes["/m/images_background_small1.zip"] = (small1, len(small1))
    routes["/m/images_background_small2.zip"] = (small1, len(small1))  # wrong bytes
    monkeypatch.setenv("MANYTASK_OMNIGLOT_URL", f"{base}/m")  # the env var picks the mirror
    [path] = fetch_omniglot(tmp_path, names=["images_background_small1"], progress=False)
    assert path == tmp_path / "omniglot" / "images_background_small1.zip"
    assert path.read_bytes() == small1
    assert verify_omniglot(tmp_path)["images_background_small1"]["status"] == "ok"
    with pytest.raises(ArchiveError, match="images_background_small1"):
        fetch_omniglot(tmp_path, names=["images_background_small2"], progress=False)
    assert sorted(p.name for p in (tmp_path / "omniglot").iterdir()) == [path.name]
    del small2


# ---------------------------------------------------------------- synthetic archives


def test_synthetic_load_and_cache_staleness(
    synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    store = load_omniglot(14, data_dir=synthetic, cache_dir=cache, progress=False)
    assert store.class_names == (
        "Alpha/character01",
        "Alpha/character02",
        "Beta/character01",
        "Gamma/character01",
        "Gamma/character02",
    )
    assert tuple(store.images.shape) == (5, 20, 14, 14)
    [first] = (cache / "omniglot").glob("*.npz")

    calls: list[int] = []
    decode = og._decode_archives
    monkeypatch.setattr(og, "_decode_archives", lambda *a, **k: calls.append(1) or decode(*a, **k))
    same = load_omniglot(14, data_dir=synthetic, cache_dir=cache, progress=False)
    assert calls == [] and torch.equal(same.images, store.images)

    # A damaged cache is rebuilt, not trusted.
    first.write_bytes(first.read_bytes()[:100])
    rebuilt = load_omniglot(14, data_dir=synthetic, cache_dir=cache, progress=False)
    assert calls == [1] and torch.equal(rebuilt.images, store.images)

    # A changed source archive gets a new cache key: rebuilt, the stale cache removed.
    bg = synthetic / "omniglot" / "images_background.zip"
    _make_archive(bg, "images_background", BG, seed=7)
    digest = og.digest_members(og.read_zip_members(bg, ".png"))
    monkeypatch.setitem(og._ARCHIVES, "images_background", og._ArchiveSpec(2, 3, digest))
    changed = load_omniglot(14, data_dir=synthetic, cache_dir=cache, progress=False)
    assert calls == [1, 1]
    assert not torch.equal(changed.images[:3], store.images[:3])
    assert torch.equal(changed.images[3:], store.images[3:])
    [second] = (cache / "omniglot").glob("*.npz")
    assert second != first

    # A format-version bump also invalidates the cache.
    monkeypatch.setattr(og, "FORMAT_VERSION", og.FORMAT_VERSION + 1)
    load_omniglot(14, data_dir=synthetic, cache_dir=cache, progress=False)
    assert calls == [1, 1, 1]


def test_load_image_equals_store_entry(synthetic: Path, tmp_path: Path) -> None:
    store = load_omniglot(28, data_dir=synthetic, cache_dir=tmp_path / "c", progress=False)
    with zipfile.ZipFile(synthetic / "images_evaluation.zip") as zf:
        name = "images_evaluation/Gamma/character02/0003_05.png"
        (tmp_path / "p.png").write_bytes(zf.read(name))
    assert torch.equal(load_image(tmp_path / "p.png", 28), store.images[4, 4])


def _expect_invalid(root: Path, pattern: str) -> None:
    report = verify_omniglot(root)["images_background"]
    assert report["status"] == "invalid"
    assert "images_background.zip" in report["message"] and FETCH in report["message"]
    with pytest.raises(ArchiveError, match=pattern):
        load_omniglot(28, data_dir=root, cache_dir=root / "cache", progress=False)


def test_truncated_archive(synthetic: Path) -> None:
    bg = synthetic / "omniglot" / "images_background.zip"
    bg.write_bytes(bg.read_bytes()[:5000])
    _expect_invalid(synthetic, r"images_background\.zip: not a readable zip")


def test_flipped_bytes_fail_crc(synthetic: Path) -> None:
    bg = synthetic / "omniglot" / "images_background.zip"
    raw = bytearray(bg.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # inside some stored PNG
    bg.write_bytes(bytes(raw))
    _expect_invalid(synthetic, r"images_background\.zip: not a readable zip.*CRC")


def test_digest_mismatch(synthetic: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(og._ARCHIVES, "images_background", og._ArchiveSpec(2, 3, "0" * 64))
    _expect_invalid(synthetic, "content digest .* does not match")


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("top", "top folder is 'images_evaluation'"),
        ("count", r"Alpha/character02 has 19 images"),
        ("other", "contains no PNG images"),
        ("stray", "unexpected member"),
    ],
)
def test_wrong_layout(synthetic: Path, kind: str, pattern: str) -> None:
    bg = synthetic / "omniglot" / "images_background.zip"
    if kind == "top":
        _make_archive(bg, "images_evaluation", BG)
    elif kind == "count":
        _make_archive(bg, "images_background", {"Alpha": 1})
        with zipfile.ZipFile(bg, "a") as zf:
            for d in range(1, 20):
                zf.writestr(f"images_background/Alpha/character02/0009_{d:02d}.png", b"x")
    elif kind == "other":
        with zipfile.ZipFile(bg, "w") as zf:
            zf.writestr("notes/readme.txt", b"hello")
    else:
        _make_archive(bg, "images_background", BG)
        with zipfile.ZipFile(bg, "a") as zf:
            zf.writestr("images_background/Alpha/extra.png", b"x")
    _expect_invalid(synthetic, pattern)


def test_missing_archive(synthetic: Path) -> None:
    (synthetic / "images_evaluation.zip").unlink()
    report = verify_omniglot(synthetic)
    assert report["images_evaluation"]["status"] == "missing"
    assert report["images_background"]["status"] == "ok"
    with pytest.raises(ArchiveError, match=f"images_evaluation.zip: not found.*{FETCH}"):
        load_omniglot(source="archives", data_dir=synthetic, progress=False)
    # auto at 28 falls back to the embedded copy when the archives are incomplete.
    assert load_omniglot(data_dir=synthetic, progress=False).source == "omniglot:embedded"


# ---------------------------------------------------------------- downloads


def test_download_then_load(
    synthetic: Path, tmp_path: Path, http_server: tuple[str, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, routes = http_server
    monkeypatch.setenv("MANYTASK_OMNIGLOT_URL", base)
    for name in og._FULL:
        body = og._find_archive(synthetic, name).read_bytes()  # type: ignore[union-attr]
        routes[f"/{name}.zip"] = (body, len(body))
    root = tmp_path / "fresh"
    store = load_omniglot(data_dir=root, cache_dir=tmp_path / "c", download=True, progress=False)
    assert store.source.startswith("omniglot:archives:") and len(store) == 5
    assert sorted(p.name for p in (root / "omniglot").iterdir()) == [
        "images_background.zip",
        "images_evaluation.zip",
    ]
    routes.clear()  # present and verified: nothing is downloaded again
    assert len(fetch_omniglot(root, names=list(og._FULL), base_url=base, progress=False)) == 2


@pytest.mark.parametrize("case", ["truncated", "wrong_bytes", "404"])
def test_failed_download_leaves_nothing(
    synthetic: Path, tmp_path: Path, http_server: tuple[str, dict], case: str
) -> None:
    base, routes = http_server
    good = (synthetic / "omniglot" / "images_background.zip").read_bytes()
    other = (synthetic / "images_evaluation.zip").read_bytes()
    if case == "truncated":
        routes["/images_background.zip"] = (good[: len(good) // 2], len(good))
    elif case == "wrong_bytes":
        routes["/images_background.zip"] = (other, len(other))
    root = tmp_path / "fresh"
    pattern = {"truncated": "cut short", "wrong_bytes": "top folder", "404": "HTTP 404"}[case]
    with pytest.raises(ArchiveError, match=f"images_background.*{pattern}"):
        fetch_omniglot(root, names=["images_background"], base_url=base, progress=False)
    assert list((root / "omniglot").iterdir()) == []
    assert verify_omniglot(root)["images_background"]["status"] == "missing"


def test_unknown_archive_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="images_background_small1"):
        fetch_omniglot(tmp_path, names=["images_foo"])


def test_decoding_progress_is_plain_lines_when_output_is_not_a_terminal(
    synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Found by hand: `manytask run ... > log` wrote the decoding bar's carriage-return updates
    # into the log (the run's own bars already printed plain lines; the data layer used tqdm).
    load_omniglot(14, data_dir=synthetic, cache_dir=tmp_path / "cache", progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines and all(line.startswith("decoding Omniglot") for line in lines)
