"""MULAN yeast / scene / emotions: the ARFF reader, published counts, shared inputs, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from manytask import metrics
from manytask.data import mulan
from manytask.data.archives import ArchiveError
from manytask.data.multitask import stack_labels

ARFF = """% a comment
@relation demo
@attribute 'first feature' numeric
@attribute b REAL
@attribute L1 {0,1}
@attribute L2 {0,1}

@data
0.5,-1,1,0
% another comment
2,3.25,0,1
"""


def test_read_arff_golden() -> None:
    names, data = mulan.read_arff(ARFF, "demo.arff")
    assert names == ["first feature", "b", "L1", "L2"]
    assert data.tolist() == [[0.5, -1.0, 1.0, 0.0], [2.0, 3.25, 0.0, 1.0]]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (ARFF.replace("REAL", "string"), "only numeric"),
        (ARFF.replace("{0,1}", "{a,b}", 1), "only numeric"),
        (ARFF.replace("2,3.25,0,1", "{0 2, 3 1}"), "sparse"),
        (ARFF.replace("3.25", "?"), "missing values"),
        (ARFF.replace("2,3.25,0,1", "2,3.25,0"), "unreadable data row|values for 4"),
        (ARFF.split("@data")[0], "no @data section"),
    ],
)
def test_read_arff_errors(text: str, pattern: str) -> None:
    with pytest.raises(ArchiveError, match=f"demo.arff: .*({pattern})"):
        mulan.read_arff(text, "demo.arff")


@pytest.mark.parametrize(
    ("name", "rows", "features", "labels"),
    [
        ("yeast", (1500, 917), 103, 14),
        ("scene", (1211, 1196), 294, 6),
        ("emotions", (391, 202), 72, 6),
    ],
)
def test_published_counts(
    shared_data: Path, tmp_path: Path, name: str, rows: tuple[int, int], features: int, labels: int
) -> None:
    data = mulan.load_mulan(name, shared_data, cache_dir=tmp_path)  # type: ignore[arg-type]
    assert data.num_tasks == labels and data.input_shape == (features,)
    n_val = round(0.1 * rows[0])
    assert data.sizes("train")[0] == rows[0] - n_val and data.sizes("val")[0] == n_val
    assert data.sizes("test")[0] == rows[1]
    assert data.shared_inputs and all(d.x is data.test[0].x for d in data.test)
    assert data.label_set_metrics == ("hamming_loss", "micro_f1", "macro_f1")
    y = stack_labels(data.test)
    assert y.shape == (rows[1], labels)
    # every label is present in the test split, so per-label AUC is defined
    assert bool((y.sum(0) > 0).all())
    # label-set metrics run on [n, K] outputs: a constant "absent" prediction
    assert metrics.hamming_loss(torch.full_like(y, -1.0), y) == pytest.approx(y.mean().item())
    freq = [t.metadata[0] for t in data.tasks]
    assert freq == pytest.approx(stack_labels(data.train).mean(0).tolist(), abs=1e-6)


def test_yeast_labels_follow_the_file_and_splits_are_seeded(
    shared_data: Path, tmp_path: Path
) -> None:
    a = mulan.load_yeast(shared_data, cache_dir=tmp_path, seed=1)
    b = mulan.load_yeast(shared_data, cache_dir=tmp_path, seed=1)
    c = mulan.load_yeast(shared_data, cache_dir=tmp_path, seed=2, standardize=True)
    assert a.task_names == tuple(f"Class{i}" for i in range(1, 15))
    assert torch.equal(a.val[0].x, b.val[0].x) and not torch.equal(a.val[0].x, c.val[0].x)
    assert c.train[0].x.mean(0).abs().max() < 1e-4
    assert "FunCat" in a.tasks[0].description


def test_corrupt_file_names_it(shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "data" / "mulan_multilabel"
    folder.mkdir(parents=True)
    for f in ("emotions-train.arff", "emotions-test.arff", "emotions.xml"):
        shutil.copy(shared_data / "mulan_multilabel" / f, folder / f)
    test = folder / "emotions-test.arff"
    test.write_bytes(test.read_bytes().replace(b"0.036299", b"0.036298", 1))
    with pytest.raises(ArchiveError, match=r"emotions-test\.arff: sha256 .*fetch emotions"):
        mulan.load_emotions(tmp_path / "data", cache_dir=tmp_path / "cache")


def test_fetch_from_loopback(
    shared_data: Path, tmp_path: Path, http_server: tuple[str, dict]
) -> None:
    base, routes = http_server
    for f in ("emotions-train.arff", "emotions-test.arff", "emotions.xml"):
        body = (shared_data / "mulan_multilabel" / f).read_bytes()
        routes[f"/m/{f}"] = (body, len(body))
    paths = mulan.MULAN_FILES["emotions"].fetch(tmp_path, base_url=f"{base}/m", progress=False)
    assert [p.parent.name for p in paths] == ["mulan_multilabel"] * 3
    data = mulan.load_emotions(tmp_path, cache_dir=tmp_path / "cache")
    assert data.sizes("test")[0] == 202 and "happy-pleased" in data.task_names
