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
