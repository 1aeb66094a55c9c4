"""MNIST / Fashion-MNIST (IDX, verified by decompressed md5) and MultiMNIST / MultiFashion."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from manytask.data import mnist, multimnist
from manytask.data.archives import ArchiveError
from manytask.data.mnist import load_fashion_mnist, load_mnist, mnist_arrays, parse_idx
from manytask.data.multimnist import load_multi_fashion, load_multi_mnist, overlay_pairs


def test_parse_idx_checks_magic_and_length() -> None:
    header = (2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (2, 2, 3))
    images = parse_idx(header + bytes(range(12)), 2051, "x")
    assert images.shape == (2, 2, 3) and images[1, 1, 2] == 11
    with pytest.raises(ArchiveError, match="magic number 2051, expected 2049"):
        parse_idx(header + bytes(12), 2049, "x")
    with pytest.raises(ArchiveError, match="truncated"):
        parse_idx(header + bytes(11), 2051, "x")


def _reference_overlay(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The construction written out as Sener & Koltun's loader states it, one image at a time."""
    canvas = np.zeros((36, 36), dtype=np.uint8)
    canvas[0:28, 0:28] = left
    canvas[6:34, 6:34] = right
    canvas[6:28, 6:28] = np.maximum(left[6:28, 6:28], right[0:22, 0:22])
    return np.asarray(Image.fromarray(canvas).resize((28, 28), Image.Resampling.NEAREST))


def test_overlay_equals_the_paper_construction() -> None:
    rng = np.random.default_rng(0)
    left = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    right = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    out = overlay_pairs(left, right)
    for i in range(5):
        assert np.array_equal(out[i], _reference_overlay(left[i], right[i]))
    with pytest.raises(ValueError, match="uint8"):
        overlay_pairs(left.astype(np.float32), right)


def _fake_arrays(n_train: int = 40, n_test: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train).astype(np.int64),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test).astype(np.int64),
    }


def test_build_traces_every_composite_to_its_two_sources() -> None:
    a = _fake_arrays()
    built = multimnist._build("mnist", a, seed=3, val_size=10)
    assert [len(built[f"{s}_x"]) for s in ("train", "val", "test")] == [30, 10, 12]
    # Validation images are held out before pairing: no source image in two splits.
    train_src = set(built["train_left_index"]) | set(built["train_right_index"])
    val_src = set(built["val_left_index"]) | set(built["val_right_index"])
    assert not train_src & val_src
    assert sorted(built["train_left_index"].tolist() + built["val_left_index"].tolist()) == list(
        range(40)
    )
    for split, src in (("train", "train"), ("val", "train"), ("test", "test")):
        li, ri = built[f"{split}_left_index"], built[f"{split}_right_index"]
        expected = overlay_pairs(a[f"{src}_images"][li], a[f"{src}_images"][ri])
        assert np.array_equal(built[f"{split}_x"], expected)
        assert np.array_equal(built[f"{split}_left"], a[f"{src}_labels"][li])
        assert np.array_equal(built[f"{split}_right"], a[f"{src}_labels"][ri])
    again = multimnist._build("mnist", a, seed=3, val_size=10)
    other = multimnist._build("mnist", a, seed=4, val_size=10)
    assert all(np.array_equal(built[k], again[k]) for k in built)
    assert not np.array_equal(built["train_right_index"], other["train_right_index"])


def test_mnist_counts_and_splits(shared_data: Path, tmp_path: Path) -> None:
    data = load_mnist(shared_data, cache_dir=tmp_path)
    assert data.sizes("train") == (50_000,) and data.sizes("val") == (10_000,)
    assert data.sizes("test") == (10_000,) and data.input_shape == (1, 28, 28)
    train_y = torch.cat([data.train[0].y, data.val[0].y])
    assert torch.bincount(train_y).tolist() == mnist._CLASS_COUNTS["mnist"]["train"]
    assert data.train[0].x.dtype == torch.uint8 and int(data.train[0].x.max()) == 255
    fashion = load_fashion_mnist(shared_data, cache_dir=tmp_path)
    assert torch.bincount(fashion.test[0].y).tolist() == [1000] * 10
    assert len(list((tmp_path / "mnist").glob("mnist-*.npz"))) == 1


def test_multi_mnist_from_shared_data(shared_data: Path, tmp_path: Path) -> None:
    data = load_multi_mnist(shared_data, cache_dir=tmp_path, seed=0)
    assert data.task_names == ("left", "right") and data.shared_inputs
    assert data.sizes("train") == (50_000, 50_000) and data.sizes("test") == (10_000, 10_000)
    assert data.train[0].x is data.train[1].x
    raw = mnist_arrays("mnist", shared_data, cache_dir=tmp_path)
    built = multimnist._build("mnist", raw, seed=0, val_size=10_000)
    i = 123
    li, ri = built["test_left_index"][i], built["test_right_index"][i]
    assert int(data.test[0].y[i]) == raw["test_labels"][li]
    assert int(data.test[1].y[i]) == raw["test_labels"][ri]
    expected = _reference_overlay(raw["test_images"][li], raw["test_images"][ri])
    assert np.array_equal(data.test[0].x[i, 0].numpy(), expected)
    fashion = load_multi_fashion(shared_data, cache_dir=tmp_path)
    assert fashion.name == "multi_fashion" and "Ankle boot" in fashion.tasks[0].description


def test_corrupt_idx_names_the_file(shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "data" / "mnist"
    shutil.copytree(shared_data / "mnist", folder)
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(labels.read_bytes()))
    content[100] = (content[100] + 1) % 10  # one label changed, re-gzipped: valid gzip
    labels.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(ArchiveError, match=r"t10k-labels-idx1-ubyte\.gz: md5 .*fetch mnist"):
        load_mnist(tmp_path / "data", cache_dir=tmp_path / "cache")
    labels.unlink()
    with pytest.raises(ArchiveError, match=r"t10k-labels-idx1-ubyte\.gz: not found"):
        load_mnist(tmp_path / "data", cache_dir=tmp_path / "cache")


def test_fetch_mnist_file_from_loopback(
    shared_data: Path, tmp_path: Path, http_server: tuple[str, dict]
) -> None:
    base, routes = http_server
    # Serve the official-content file re-gzipped with other settings: other .gz bytes pass.
    content = gzip.decompress((shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    body = gzip.compress(content, compresslevel=1, mtime=0)
    routes["/mnist/t10k-labels-idx1-ubyte.gz"] = (body, len(body))
    [path] = mnist.MNIST_FILES.fetch(
        tmp_path, names=["t10k-labels-idx1-ubyte.gz"], base_url=f"{base}/mnist", progress=False
    )
    assert path == tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz" and path.read_bytes() == body
    assert mnist.MNIST_FILES.verify(tmp_path)["t10k-labels-idx1-ubyte.gz"]["status"] == "ok"
