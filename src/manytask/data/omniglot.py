"""Omniglot (Lake, Salakhutdinov & Tenenbaum, Science 2015): fetch, verify, decode, cache, split.

Data: 1623 handwritten characters from 50 alphabets, each drawn once by 20 people, as
105x105 1-bit PNGs. License MIT, Copyright (c) 2015 Brenden Lake (see
``manytask/data/_embedded/LICENSE`` and ``CITATION``).

Sources, in the order ``load_omniglot(source="auto")`` tries them:

1. the official archives ``images_background.zip`` and ``images_evaluation.zip`` in
   ``<data_dir>/omniglot/`` (or directly in ``<data_dir>``), fetched with
   :func:`fetch_omniglot` from ``brendenlake/omniglot`` (or a mirror). They are verified by a
   *content digest* (sha256 over the sorted PNG member names and bytes, see
   :func:`manytask.data.archives.zip_content_digest`) rather than the zip bytes, so a zip
   rebuilt from the same PNGs passes. They are decoded once into a cache file in
   ``<cache_dir>/omniglot/``, keyed by the archives' name, size and mtime, the image size and
   a format version; a changed archive or a new format version gives a new key and a rebuild.
2. the embedded copy shipped inside the package: all 1623 x 20 images at 28x28, bit-packed
   and compressed (``_embedded/omniglot28.npz``), built by :func:`build_embedded`. It needs
   neither a data directory nor a network, and is used when the archives are absent and
   ``image_size == 28``.

Store layout: ``images[c, i]`` is class ``c`` (classes sorted by ``"Alphabet/characterNN"``
over all 1623 characters, background and evaluation alphabets mixed; alphabet names are
unique) and drawer ``drawers[c, i]`` (instances sorted by drawer, so ``drawers[c] == 1..20``).
Pixels are ``uint8`` with ink = 255 and background = 0. Rotations are not applied; episode
samplers treat a rotation as a new class.

Decoding reproduces MAML's ``resize_images.py``: ``Image.open(p).resize((s, s),
Image.LANCZOS)`` on the raw mode-``"1"`` image (for 1-bit images Pillow resamples with
nearest neighbour), then ink (``False`` pixels) -> 255. At ``image_size == 105`` nothing is
resized. The 28x28 result equals the ``omniglot_resized`` images used by MAML and CS330
pixel for pixel (checked by ``tests/data/test_omniglot.py``).

Splits (:func:`omniglot_split`): ``"vinyals"`` (Vinyals et al. 2016 as distributed with
Prototypical Networks: 1028 train / 172 val / 423 test characters), ``"lake"`` (964
background / 659 evaluation characters) and ``"small1"`` / ``"small2"`` (Lake's minimal
background sets of 136 / 156 characters; test = evaluation set). The character lists ship
in ``manytask/data/splits/`` so every split works with the embedded copy too.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import lzma
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from manytask.data.archives import (
    ArchiveError,
    atomic_output,
    digest_members,
    read_zip_members,
)
from manytask.data.cache import cached_arrays
from manytask.data.paths import cache_dir as resolve_cache_dir
from manytask.data.paths import data_dir as resolve_data_dir
from manytask.data.sources import FileSet, RemoteFile, source_key
from manytask.data.store import ImageStore
from manytask.progress import progress_bar

__all__ = [
    "OMNIGLOT_ARCHIVES",
    "OMNIGLOT_URL",
    "ArchiveError",
    "build_embedded",
    "fetch_omniglot",
    "load_image",
    "load_omniglot",
    "omniglot_split",
    "verify_omniglot",
]

logger = logging.getLogger(__name__)

OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
"""Default base URL of the official archives; ``$MANYTASK_OMNIGLOT_URL`` overrides it."""
URL_ENV = "MANYTASK_OMNIGLOT_URL"

FORMAT_VERSION = 1
"""Version of the cache / embedded file format; bump it to invalidate every cache."""

NUM_DRAWERS = 20
NATIVE_SIZE = 105
EMBEDDED_SIZE = 28
_FETCH_HINT = "Delete it and run `manytask data fetch omniglot` (or `fetch_omniglot()`)."
_MEMBER_RE = re.compile(
    r"^(?P<top>[^/]+)/(?P<alphabet>[^/]+)/(?P<character>character\d{2})/\d{4}_(?P<drawer>\d{2})\.png$"
)

Split = Literal["vinyals", "lake", "small1", "small2"]
Source = Literal["auto", "archives", "embedded"]


@dataclass(frozen=True)
class _ArchiveSpec:
    """What one official archive must contain."""

    alphabets: int
    characters: int
    digest: str | None  # content digest (see archives.digest_members); None = not checked


_ARCHIVES: dict[str, _ArchiveSpec] = {
    "images_background": _ArchiveSpec(
        30, 964, "39d1bb16886684d0960477aa72b1ee2b5d4e22d7232e3e04dba8c786af0c9832"
    ),
    "images_evaluation": _ArchiveSpec(
        20, 659, "424d4e4f7b109ef010e44ff3fc0008728fc957800fa6ea2f87277e710bc61a50"
    ),
    "images_background_small1": _ArchiveSpec(
        5, 136, "9dcd337b3e4b4e5466a621d9ac89c9424ece4e263102fff886572c77e55b8903"
    ),
    "images_background_small2": _ArchiveSpec(
        5, 156, "945a9a784945bc5d838196ce30ed92cf8439b387f5a443027dc2a4fd5677124a"
    ),
}
OMNIGLOT_ARCHIVES: tuple[str, ...] = tuple(_ARCHIVES)
"""Names (without ``.zip``) of the four official archives."""
_FULL = ("images_background", "images_evaluation")

_SPLIT_PARTS: dict[str, tuple[str, ...]] = {
    "vinyals": ("train", "val", "test", "trainval"),
    "lake": ("background", "evaluation"),
    "small1": ("train", "test"),
    "small2": ("train", "test"),
}


# --------------------------------------------------------------------------- decoding


def _decode_png(data: bytes, image_size: int, name: str) -> np.ndarray:
    """Decode one Omniglot PNG to ``uint8 [image_size, image_size]`` with ink = 255."""
    with Image.open(io.BytesIO(data)) as im:
        if im.mode != "1":
            raise ArchiveError(
                f"{name}: expected a 1-bit (mode '1') Omniglot PNG, found mode {im.mode!r}."
            )
        img = im
        if img.size != (image_size, image_size):
            # Exactly MAML's resize_images.py; Pillow resamples mode "1" with nearest.
            img = img.resize((image_size, image_size), Image.Resampling.LANCZOS)
        background = np.asarray(img, dtype=bool)
    return np.where(background, 0, 255).astype(np.uint8)


def load_image(path: str | os.PathLike[str], image_size: int = 28) -> Tensor:
    """Decode one Omniglot PNG exactly as the store does.

    Args:
        path: a PNG file (``.../characterNN/NNNN_DD.png``), 105x105, mode ``"1"``.
        image_size: output side length; 105 means no resize.

    Returns:
        ``uint8`` tensor ``[image_size, image_size]``, ink = 255, background = 0; equal to
        the store entry for that file.

    Example:
        >>> img = load_image("images_background/Latin/character01/0001_01.png")  # doctest: +SKIP
        >>> img.shape, img.dtype  # doctest: +SKIP
        (torch.Size([28, 28]), torch.uint8)
    """
    size = _check_size(image_size)
    path = Path(path)
    return torch.from_numpy(_decode_png(path.read_bytes(), size, str(path)))


def _check_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int (e.g. 28 or 105), got {image_size!r}")
    return image_size


# --------------------------------------------------------------------------- archives


def _find_archive(root: Path, name: str) -> Path | None:
    return _FILES.find(root, f"{name}.zip")


def _read_archive(
    path: Path, name: str, spec: _ArchiveSpec
) -> tuple[dict[str, list[tuple[int, bytes]]], str]:
    """Read, check layout and content digest of one archive.

    Returns:
        ``({"Alphabet/characterNN": [(drawer, png bytes), ...sorted by drawer]}, digest)``.

    Raises:
        ArchiveError: missing, corrupt, wrong layout or wrong content; the message names the
            file and the fix.
    """
    members = read_zip_members(path, ".png", hint=_FETCH_HINT)
    if not members:
        raise ArchiveError(
            f"{path}: contains no PNG images, so it is not the Omniglot archive {name}.zip. "
            f"{_FETCH_HINT}"
        )
    classes: dict[str, list[tuple[int, bytes]]] = {}
    for member, data in members:
        m = _MEMBER_RE.match(member)
        if m is None:
            raise ArchiveError(
                f"{path}: unexpected member {member!r}; expected "
                f"'{name}/<Alphabet>/characterNN/NNNN_DD.png'. {_FETCH_HINT}"
            )
        if m["top"] != name:
            raise ArchiveError(
                f"{path}: top folder is {m['top']!r}, expected {name!r} (member {member!r}); "
                f"this is not {name}.zip. {_FETCH_HINT}"
            )
        key = f"{m['alphabet']}/{m['character']}"
        classes.setdefault(key, []).append((int(m["drawer"]), data))
    for key, items in classes.items():
        items.sort(key=lambda item: item[0])
        drawers = [d for d, _ in items]
        if drawers != list(range(1, NUM_DRAWERS + 1)):
            raise ArchiveError(
                f"{path}: character {key} has {len(items)} images with drawers {drawers}; "
                f"expected exactly one per drawer 1..{NUM_DRAWERS}. {_FETCH_HINT}"
            )
    alphabets = {key.split("/")[0] for key in classes}
    if len(alphabets) != spec.alphabets or len(classes) != spec.characters:
        raise ArchiveError(
            f"{path}: found {len(alphabets)} alphabets and {len(classes)} characters, "
            f"expected {spec.alphabets} and {spec.characters} for {name}.zip. {_FETCH_HINT}"
        )
    digest = digest_members(members)
    if spec.digest is not None and digest != spec.digest:
        raise ArchiveError(
            f"{path}: content digest {digest} does not match the expected {spec.digest} "
            f"for {name}.zip (some images differ from the official release). {_FETCH_HINT}"
        )
    return classes, digest


def _check_archive(name: str, path: Path) -> None:
    # Looks the spec up at call time, so tests can swap in the specs of tiny archives.
    _read_archive(path, name, _ARCHIVES[name])


_FILES = FileSet(
    "omniglot",
    "omniglot",
    tuple(
        RemoteFile(f"{name}.zip", check=functools.partial(_check_archive, name))
        for name in _ARCHIVES
    ),
    (OMNIGLOT_URL,),
)
"""The four official archives as a :class:`~manytask.data.sources.FileSet` (fetch / find)."""


def _resolve_url(base_url: str | None) -> str:
    base = base_url or os.environ.get(URL_ENV) or OMNIGLOT_URL
    return base.rstrip("/")


def fetch_omniglot(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    names: Sequence[str] = OMNIGLOT_ARCHIVES,
    base_url: str | None = None,
    progress: bool = True,
) -> list[Path]:
    """Make sure the official Omniglot archives are in ``<data_dir>/omniglot/``, verified.

    An archive already present (in ``<data_dir>/omniglot/`` or ``<data_dir>``) that passes
    verification is kept. Otherwise it is downloaded from ``<base_url>/<name>.zip`` into a
    temporary file in ``<data_dir>/omniglot/``, verified (layout, counts, content digest), and
    only then renamed into place; a failed, short or wrong download leaves nothing behind.

    Args:
        data_dir: data directory (argument > ``$MANYTASK_DATA`` > ``~/.cache/manytask/data``).
        names: which archives, from :data:`OMNIGLOT_ARCHIVES` (default: all four).
        base_url: where to download from; default ``$MANYTASK_OMNIGLOT_URL``, else the
            official ``brendenlake/omniglot`` repository (:data:`OMNIGLOT_URL`).
        progress: show download progress bars.

    Returns:
        The verified archive paths, in the order of ``names``.

    Raises:
        ValueError: an unknown archive name.
        ArchiveError: a download failed or delivered the wrong content.
    """
    unknown = [n for n in names if n not in _ARCHIVES]
    if unknown:
        raise ValueError(
            f"names: unknown Omniglot archive(s) {unknown}; valid: {OMNIGLOT_ARCHIVES}"
        )
    root = resolve_data_dir(data_dir)
    return _FILES.fetch(
        root,
        names=[f"{name}.zip" for name in names],
        base_url=_resolve_url(base_url),
        progress=progress,
    )


def verify_omniglot(data_dir: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """Check every official archive in the data directory; never raises for bad files.

    Args:
        data_dir: data directory (argument > ``$MANYTASK_DATA`` > ``~/.cache/manytask/data``).

    Returns:
        ``{archive name: report}``, each report with keys ``status`` (``"ok"``,
        ``"missing"`` or ``"invalid"``), ``path`` (str or None), ``message``, ``alphabets``,
        ``characters``, ``images`` and ``digest`` (None where unknown).
    """
    root = resolve_data_dir(data_dir)
    report: dict[str, dict[str, Any]] = {}
    for name, spec in _ARCHIVES.items():
        path = _find_archive(root, name)
        entry: dict[str, Any] = {
            "status": "missing",
            "path": None if path is None else str(path),
            "message": f"not found in {root / 'omniglot'} or {root}; run "
            "`manytask data fetch omniglot`",
            "alphabets": None,
            "characters": None,
            "images": None,
            "digest": None,
        }
        if path is not None:
            try:
                classes, digest = _read_archive(path, name, spec)
            except ArchiveError as exc:
                entry.update(status="invalid", message=str(exc))
            else:
                entry.update(
                    status="ok",
                    message="verified",
                    alphabets=len({c.split("/")[0] for c in classes}),
                    characters=len(classes),
                    images=sum(len(v) for v in classes.values()),
                    digest=digest,
                )
        report[name] = entry
    return report


# --------------------------------------------------------------------------- arrays / files


def _decode_archives(
    paths: Mapping[str, Path], image_size: int, progress: bool
) -> dict[str, np.ndarray]:
    """Verify and decode the background + evaluation archives into the store's arrays."""
    classes: dict[str, list[tuple[int, bytes]]] = {}
    evaluation: set[str] = set()
    digests = []
    for name in _FULL:
        part, digest = _read_archive(paths[name], name, _ARCHIVES[name])
        digests.append(f"{name}:{digest}")
        overlap = classes.keys() & part.keys()
        if overlap:
            raise ArchiveError(
                f"{paths[name]}: characters also in another archive, e.g. {sorted(overlap)[:3]}. "
                f"{_FETCH_HINT}"
            )
        classes.update(part)
        if name == "images_evaluation":
            evaluation.update(part)
    names = sorted(classes)
    images = np.empty((len(names), NUM_DRAWERS, image_size, image_size), dtype=np.uint8)
    with progress_bar(
        total=len(names) * NUM_DRAWERS, desc="decoding Omniglot", unit="img", enabled=progress
    ) as bar:
        for c, key in enumerate(names):
            for i, (_, data) in enumerate(classes[key]):
                images[c, i] = _decode_png(data, image_size, f"{key} drawer {i + 1}")
            bar.update(NUM_DRAWERS)
    alphabets = sorted({n.split("/")[0] for n in names})
    alphabet_index = {a: i for i, a in enumerate(alphabets)}
    return {
        "images": images,
        "class_names": np.array(names),
        "alphabets": np.array(alphabets),
        "alphabet_of": np.array([alphabet_index[n.split("/")[0]] for n in names], dtype=np.int64),
        "drawers": np.tile(np.arange(1, NUM_DRAWERS + 1, dtype=np.int64), (len(names), 1)),
        "evaluation": np.array([n in evaluation for n in names]),
        "digests": np.array(digests),
    }


def _pack(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    images = arrays["images"]
    ink = images == 255
    if not np.array_equal(ink | (images == 0), np.ones_like(ink)):
        raise ValueError("Omniglot images must be binary (0 or 255) to be bit-packed")
    out: dict[str, Any] = {k: v for k, v in arrays.items() if k != "images"}
    out["bits"] = np.packbits(ink.reshape(-1))
    out["shape"] = np.array(images.shape, dtype=np.int64)
    out["format_version"] = np.array(FORMAT_VERSION)
    out["drawers"] = arrays["drawers"].astype(np.uint8)
    return out


def _unpack(npz: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    version = int(npz["format_version"])
    if version != FORMAT_VERSION:
        raise ValueError(f"format version {version}, expected {FORMAT_VERSION}")
    shape = tuple(int(s) for s in npz["shape"])
    bits = np.unpackbits(npz["bits"], count=int(np.prod(shape)))
    out = {k: np.asarray(npz[k]) for k in ("class_names", "alphabets", "alphabet_of", "drawers")}
    out["images"] = (bits.reshape(shape) * np.uint8(255)).astype(np.uint8)
    return out


def _to_store(arrays: Mapping[str, np.ndarray], source: str) -> ImageStore:
    return ImageStore(
        images=torch.from_numpy(np.ascontiguousarray(arrays["images"])),
        class_names=tuple(str(n) for n in arrays["class_names"]),
        alphabets=tuple(str(a) for a in arrays["alphabets"]),
        alphabet_of=torch.from_numpy(arrays["alphabet_of"].astype(np.int64)),
        drawers=torch.from_numpy(arrays["drawers"].astype(np.int64)),
        source=source,
    )


def _load_npz_bytes(raw: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        return _unpack({k: npz[k] for k in npz.files})


def _embedded_resource() -> Any:
    return resources.files("manytask.data").joinpath("_embedded").joinpath("omniglot28.npz.xz")


def _load_embedded() -> ImageStore:
    raw = lzma.decompress(_embedded_resource().read_bytes())
    return _to_store(_load_npz_bytes(raw), "omniglot:embedded")


def build_embedded(
    out_path: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    replace_embedded: bool = False,
    progress: bool = True,
) -> Path:
    """Build the embedded 28x28 copy of all 1623 x 20 Omniglot images from the archives.

    The file is an ``.npz`` (no pickles) compressed with xz: ink bits (``np.packbits`` of
    ``[1623, 20, 28, 28]``), class names, alphabets, alphabet index, drawer ids, evaluation
    membership, the source archives' content digests and the format version. Bit-packing then
    xz gives ~0.67 MB, smaller than ``np.savez_compressed`` of the same arrays (~0.87 MB).

    Args:
        out_path: where to write; default ``<cache_dir>/omniglot/omniglot28.npz.xz``.
        data_dir: data directory holding the verified background + evaluation archives.
        cache_dir: cache directory for the default output (argument > ``$MANYTASK_CACHE`` >
            ``~/.cache/manytask/stores``).
        replace_embedded: write over the file shipped inside the installed package
            (``_embedded/omniglot28.npz.xz``) instead; for maintainers only, and not
            together with ``out_path``.
        progress: show a decoding progress bar.

    Returns:
        The written path (written atomically).

    Raises:
        ValueError: both ``out_path`` and ``replace_embedded``.
        ArchiveError: an archive is missing or fails verification.
    """
    if replace_embedded and out_path is not None:
        raise ValueError(
            "build_embedded: give out_path or replace_embedded (--out or --replace-embedded), "
            "not both"
        )
    if replace_embedded:
        dest = Path(str(_embedded_resource()))
    elif out_path is not None:
        dest = Path(out_path)
    else:
        dest = resolve_cache_dir(cache_dir) / "omniglot" / "omniglot28.npz.xz"
    root = resolve_data_dir(data_dir)
    paths = _require_archives(root)
    arrays = _decode_archives(paths, EMBEDDED_SIZE, progress)
    buf = io.BytesIO()
    np.savez(buf, **_pack(arrays))
    with atomic_output(dest) as tmp:
        tmp.write_bytes(lzma.compress(buf.getvalue(), preset=9 | lzma.PRESET_EXTREME))
    return dest


def _require_archives(root: Path) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    for name in _FULL:
        path = _find_archive(root, name)
        if path is None:
            raise ArchiveError(
                f"{name}.zip: not found in {root / 'omniglot'} or {root}. Run "
                "`manytask data fetch omniglot` (or `fetch_omniglot()`), or pass data_dir."
            )
        paths[name] = path
    return paths


def _load_from_archives(
    paths: Mapping[str, Path], image_size: int, cache_root: Path, progress: bool
) -> ImageStore:
    full = {name: paths[name] for name in _FULL}
    arrays = cached_arrays(
        cache_root / "omniglot",
        f"omniglot-{image_size}px",
        [FORMAT_VERSION, image_size, *source_key(full)],
        lambda: _decode_archives(paths, image_size, progress),
        encode=_pack,
        decode=_unpack,
    )
    return _to_store(arrays, f"omniglot:archives:{paths['images_background'].parent}")


def load_omniglot(
    image_size: int = 28,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    source: Source = "auto",
    download: bool = False,
    progress: bool = True,
) -> ImageStore:
    """All 1623 Omniglot characters x 20 drawers as one :class:`ImageStore`.

    Args:
        image_size: side length of the images; 105 = original, 28 = MAML / CS330 size.
        data_dir: data directory (argument > ``$MANYTASK_DATA`` > ``~/.cache/manytask/data``).
        cache_dir: where decoded stores are cached (argument > ``$MANYTASK_CACHE`` >
            ``~/.cache/manytask/stores``).
        source: ``"archives"`` (background + evaluation zips, decoded and cached),
            ``"embedded"`` (the copy shipped in the package; 28x28 only), or ``"auto"``:
            archives if both are in the data directory (or ``download`` is set), else the
            embedded copy when ``image_size == 28``.
        download: fetch missing archives (:func:`fetch_omniglot`) before loading.
        progress: show progress bars while downloading / decoding.

    Returns:
        Store with ``images`` ``uint8 [1623, 20, image_size, image_size]`` (ink = 255),
        classes sorted by ``"Alphabet/characterNN"``, drawers ``1..20``; ``store.source``
        is ``"omniglot:embedded"`` or ``"omniglot:archives:<folder>"``.

    Raises:
        ValueError: a bad ``image_size`` or ``source``; ``"embedded"`` with a size other
            than 28; nothing usable found for the request (the message says how to fetch).
        ArchiveError: an archive is corrupt or not the official one.

    Example:
        >>> store = load_omniglot(source="embedded")
        >>> tuple(store.images.shape), store.source
        ((1623, 20, 28, 28), 'omniglot:embedded')
    """
    size = _check_size(image_size)
    if source not in get_args(Source):
        raise ValueError(f"source must be one of {get_args(Source)}, got {source!r}")
    root = resolve_data_dir(data_dir)
    if source == "embedded" or (
        source == "auto"
        and not download
        and any(_find_archive(root, n) is None for n in _FULL)
        and size == EMBEDDED_SIZE
    ):
        if size != EMBEDDED_SIZE:
            raise ValueError(
                f"source='embedded' holds 28x28 images only, got image_size={size}; use "
                "source='archives' (run `manytask data fetch omniglot` first)"
            )
        return _load_embedded()
    if download:
        fetch_omniglot(root, names=_FULL, progress=progress)
    try:
        paths = _require_archives(root)
    except ArchiveError as exc:
        raise ArchiveError(
            f"{exc} Only 28x28 images ship with manytask; image_size={size} needs the archives "
            "(or pass download=True)."
            if source == "auto"
            else str(exc)
        ) from None
    return _load_from_archives(paths, size, resolve_cache_dir(cache_dir), progress)


# --------------------------------------------------------------------------- splits


def _split_json(name: str) -> dict[str, Any]:
    text = resources.files("manytask.data").joinpath("splits").joinpath(name).read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _split_names(split: str, part: str) -> list[str] | None:
    """Character names of a split part, or None for "every class of these alphabets"."""
    if split == "vinyals":
        v = _split_json("omniglot_vinyals.json")
        return v["train"] + v["val"] if part == "trainval" else list(v[part])
    lake = _split_json("omniglot_lake.json")
    if split in ("small1", "small2") and part == "train":
        return list(lake[split])
    return None


def omniglot_split(store: ImageStore, split: Split, part: str) -> ImageStore:
    """The classes of ``store`` in one part of a standard Omniglot split.

    Args:
        store: an Omniglot store (e.g. from :func:`load_omniglot`).
        split: ``"vinyals"`` (parts ``"train"`` 1028, ``"val"`` 172, ``"test"`` 423,
            ``"trainval"`` 1200 characters), ``"lake"`` (``"background"`` 964,
            ``"evaluation"`` 659), ``"small1"`` / ``"small2"`` (``"train"`` = the minimal
            background set of 136 / 156 characters, ``"test"`` = the evaluation set).
        part: the part name, see ``split``.

    Returns:
        ``store.subset(...)`` with the part's classes in store order. Rotations are not
        applied (samplers treat them as extra classes).

    Raises:
        ValueError: unknown split or part (the message lists the valid ones).
        KeyError: the store lacks some of the part's characters.

    Example:
        >>> train = omniglot_split(load_omniglot(source="embedded"), "vinyals", "train")
        >>> len(train)
        1028
    """
    if split not in _SPLIT_PARTS:
        raise ValueError(f"split must be one of {tuple(_SPLIT_PARTS)}, got {split!r}")
    if part not in _SPLIT_PARTS[split]:
        raise ValueError(
            f"part for split {split!r} must be one of {_SPLIT_PARTS[split]}, got {part!r}"
        )
    names = _split_names(split, part)
    if names is None:
        key = "background" if part == "background" else "evaluation"
        wanted = set(_split_json("omniglot_lake.json")[key])
        idx = [i for i, n in enumerate(store.class_names) if n.split("/")[0] in wanted]
        return store.subset(idx)
    return store.subset(sorted(store.index_of(names).tolist()))


def _derive_split_lists(data_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Derive the shipped split files' contents from the archives and Vinyals' lists.

    Used to produce ``splits/*.json`` and by the tests to check them. Needs all four
    archives plus ``omniglot/splits_vinyals/{train,val,test}.txt`` in the data directory.
    """
    root = resolve_data_dir(data_dir)
    members: dict[str, list[str]] = {}
    for name, spec in _ARCHIVES.items():
        path = _find_archive(root, name)
        if path is None:
            raise ArchiveError(f"{name}.zip: not found in {root}. {_FETCH_HINT}")
        members[name] = sorted(_read_archive(path, name, spec)[0])

    def chars(lines: Iterable[str]) -> list[str]:
        return sorted({"/".join(line.strip().split("/")[:2]) for line in lines if line.strip()})

    vin = root / "omniglot" / "splits_vinyals"
    return {
        "lake": {
            "background": sorted({n.split("/")[0] for n in members["images_background"]}),
            "evaluation": sorted({n.split("/")[0] for n in members["images_evaluation"]}),
            "small1": members["images_background_small1"],
            "small2": members["images_background_small2"],
        },
        "vinyals": {
            part: chars((vin / f"{part}.txt").read_text().splitlines())
            for part in ("train", "val", "test")
        },
    }
