"""`manytask data ...` over the shared archives (skipped when MANYTASK_DATA is not set)."""

import lzma

import numpy as np

from manytask.cli import main
from manytask.data import omniglot


def test_data_list_and_verify(shared_data, capsys):
    assert main(["data", "list", "--data-dir", str(shared_data)]) == 0
    out = capsys.readouterr().out
    assert "images_background" in out and "ok" in out
    assert main(["data", "verify", "--data-dir", str(shared_data)]) == 0
    out = capsys.readouterr().out
    ok = {}
    for line in out.splitlines():
        if " ok " in line:
            ok[line.split()[0]] = ok.get(line.split()[0], 0) + 1
    # `data verify` covers every registered data set; Omniglot's four archives as before.
    assert ok == {
        "omniglot": 4,
        "mnist": 4,
        "fashion_mnist": 4,
        "multi_mnist": 4,
        "multi_fashion": 4,
        "yeast": 3,
        "scene": 3,
        "emotions": 3,
        "census_income": 2,
    }
    assert main(["data", "verify", "omniglot", "--data-dir", str(shared_data)]) == 0
    assert capsys.readouterr().out.count(" ok ") == 4


def test_data_build_reproduces_the_embedded_copy(shared_data, tmp_path, capsys):
    out = tmp_path / "omniglot28.npz.xz"
    code = main(
        ["data", "build", "omniglot", "--data-dir", str(shared_data), "--out", str(out), "--quiet"]
    )
    assert code == 0 and "wrote" in capsys.readouterr().out
    built = omniglot._load_npz_bytes(lzma.decompress(out.read_bytes()))
    shipped = omniglot._load_npz_bytes(lzma.decompress(omniglot._embedded_resource().read_bytes()))
    assert built.keys() == shipped.keys()
    for key in built:
        assert np.array_equal(built[key], shipped[key]), key


def test_data_verify_reports_a_corrupt_archive(tmp_path, capsys):
    folder = tmp_path / "omniglot"
    folder.mkdir()
    (folder / "images_background.zip").write_bytes(b"PK\x03\x04 not a zip")
    assert main(["data", "verify", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "invalid" in out and "images_background.zip" in out


def _tiny_omniglot_arrays() -> dict[str, np.ndarray]:
    images = np.zeros((2, 20, 28, 28), dtype=np.uint8)
    images[:, :, 10:14, 10:14] = 255
    return {
        "images": images,
        "class_names": np.array(["A/character01", "B/character01"]),
        "alphabets": np.array(["A", "B"]),
        "alphabet_of": np.array([0, 1], dtype=np.int64),
        "drawers": np.tile(np.arange(1, 21, dtype=np.int64), (2, 1)),
        "evaluation": np.array([False, True]),
        "digests": np.array(["images_background:x", "images_evaluation:y"]),
    }


def test_data_build_without_out_leaves_the_shipped_file_alone(tmp_path, monkeypatch, capsys):
    """Issue 5, bug 6: `data build omniglot` without --out must not overwrite the package file."""
    shipped = tmp_path / "package" / "omniglot28.npz.xz"
    shipped.parent.mkdir()
    shipped.write_bytes(b"the shipped array")
    monkeypatch.setattr(omniglot, "_embedded_resource", lambda: shipped)
    monkeypatch.setattr(omniglot, "_require_archives", lambda root: {})
    tiny = _tiny_omniglot_arrays()
    monkeypatch.setattr(omniglot, "_decode_archives", lambda paths, size, progress: tiny)
    monkeypatch.setenv("MANYTASK_CACHE", str(tmp_path / "cache"))

    assert main(["data", "build", "omniglot", "--quiet"]) == 0
    assert shipped.read_bytes() == b"the shipped array"
    built = tmp_path / "cache" / "omniglot" / "omniglot28.npz.xz"
    assert built.is_file() and str(built) in capsys.readouterr().out
    arrays = omniglot._load_npz_bytes(lzma.decompress(built.read_bytes()))
    assert np.array_equal(arrays["images"], tiny["images"])

    # Only the explicit maintainer flag replaces the shipped file.
    assert main(["data", "build", "omniglot", "--replace-embedded", "--quiet"]) == 0
    assert shipped.read_bytes() == built.read_bytes()
    assert main(["data", "build", "omniglot", "--replace-embedded", "--out", "x", "--quiet"]) == 2
    assert "--replace-embedded" in capsys.readouterr().err


def test_registry_cli_errors_and_generated_sets(tmp_path, capsys):
    assert main(["data", "verify", "mulit_mnist", "--data-dir", str(tmp_path)]) == 2
    assert "Did you mean 'multi_mnist'" in capsys.readouterr().err
    assert main(["data", "verify", "mmoe_synthetic", "--data-dir", str(tmp_path)]) == 0
    assert "no files needed" in capsys.readouterr().out
    assert main(["data", "verify", "emotions", "--data-dir", str(tmp_path)]) == 0  # missing
    out = capsys.readouterr().out
    assert out.count(" missing ") == 3 and "manytask data fetch emotions" in out
    assert main(["data", "fetch", "--url", "http://127.0.0.1:9", "--quiet"]) == 2
    assert "give DATASET" in capsys.readouterr().err
    assert main(["data", "build", "mnist"]) == 2
