"""Census-Income (KDD): feature processing on tiny files in the real format; real files (slow)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from manytask.data import census
from manytask.data.archives import ArchiveError
from manytask.data.sources import FileSet, RemoteFile

COLS = census.COLUMNS


def _row(rng: np.random.Generator, *, unseen: bool = False) -> list[str]:
    row = []
    for c in COLS:
        if c in census.CONTINUOUS:
            row.append(str(int(rng.integers(0, 90))))
        elif c == "instance weight":
            row.append(f"{rng.uniform(500, 5000):.2f}")
        elif c == "marital stat":
            row.append(str(rng.choice(["Never married", "Divorced", "Widowed"])))
        elif c == "income":
            row.append(str(rng.choice(["- 50000.", "50000+."])))
        elif c == "education" and unseen:
            row.append("Unseen value")
        else:
            row.append(str(rng.choice(["Not in universe", "Yes", "No"])))
    return row


def _text(rows: list[list[str]]) -> bytes:
    return "".join(", ".join(r) + "\n" for r in rows).encode("ascii")


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    rng = np.random.default_rng(0)
    train = [_row(rng) for _ in range(40)]
    test = [_row(rng) for _ in range(19)] + [_row(rng, unseen=True)]
    folder = tmp_path / "data" / census.FOLDER
    folder.mkdir(parents=True)
    raw = {"census-income.data.gz": _text(train), "census-income.test.gz": _text(test)}
    for name, content in raw.items():
        (folder / name).write_bytes(gzip.compress(content))
    files = FileSet(
        "census_income",
        census.FOLDER,
        tuple(RemoteFile(n, content_md5=hashlib.md5(c).hexdigest()) for n, c in raw.items()),
        (),
    )
    monkeypatch.setattr(census, "CENSUS_FILES", files)
    published = {
        split: (len(rows), sum(r[-1] == "50000+." for r in rows), None)
        for split, rows in (("train", train), ("test", test))
    }
    monkeypatch.setattr(census, "_PUBLISHED", published)
    return {"root": tmp_path / "data", "train": train, "test": test, "cache": tmp_path / "c"}


def test_features_labels_and_target(tiny: dict) -> None:
    data = census.load_census_income(tiny["root"], cache_dir=tiny["cache"])
    train = tiny["train"]
    assert data.task_names == ("income", "never_married", "age")
    assert [t.kind for t in data.tasks] == ["binary", "binary", "regression"]
    assert data.shared_inputs and all(d.x is data.train[0].x for d in data.train)
    vocab = sum(len({r[COLS.index(c)] for r in train}) for c in census.NOMINAL)
    assert data.input_shape == (vocab + 6,)  # 32 one-hot columns + 6 continuous (age removed)
    x = data.train[0].x
    assert bool((x[:, :vocab].sum(1) == 32).all())  # one 1 per nominal column
    # continuous features: standardised with training statistics, age absent, weight absent
    feats = [c for c in census.CONTINUOUS if c != "age"]
    raw = np.array([[float(r[COLS.index(c)]) for c in feats] for r in train])
    expected = (raw - raw.mean(0)) / raw.std(0)
    assert np.allclose(x[:, vocab:].numpy(), expected, atol=1e-5)
    income = torch.tensor([r[-1] == "50000+." for r in train], dtype=torch.float32)
    never = torch.tensor([r[7] == "Never married" for r in train], dtype=torch.float32)
    assert torch.equal(data.train[0].y, income) and torch.equal(data.train[1].y, never)
    ages = np.array([float(r[0]) for r in train])
    y = data.train[2].y[:, 0].numpy()
    assert np.allclose(y * ages.std() + ages.mean(), ages, atol=1e-4)
    assert data.tasks[2].metadata == pytest.approx((ages.mean(), ages.std(), 1.0))
    assert data.tasks[0].metadata == pytest.approx(
        (income.mean().item(), income.std(correction=0).item(), 0.0)
    )


def test_val_test_halves_and_unseen_categories(tiny: dict) -> None:
    a = census.load_census_income(tiny["root"], cache_dir=tiny["cache"], seed=0, regression=None)
    b = census.load_census_income(tiny["root"], cache_dir=tiny["cache"], seed=1, regression=None)
    assert a.num_tasks == 2 and a.sizes("val") == (10, 10) and a.sizes("test") == (10, 10)
    assert a.input_shape[0] == b.input_shape[0]
    n_nominal = a.input_shape[0] - 7  # all 7 continuous attributes are features now
    rows = torch.cat([a.val[0].x, a.test[0].x])
    assert len({tuple(r.tolist()) for r in rows}) == 20  # the two halves partition the test file
    assert not torch.equal(a.val[0].x, b.val[0].x)
    # the test row with an education value never seen in training has 31 ones, not 32
    assert sorted(rows[:, :n_nominal].sum(1).tolist())[0] == 31
    raw_wage = census.load_census_income(
        tiny["root"], cache_dir=tiny["cache"], regression="wage_per_hour", standardize_target=False
    )
    wages = torch.tensor([float(r[5]) for r in tiny["train"]])
    assert torch.equal(raw_wage.train[2].y[:, 0], wages)
    with pytest.raises(ValueError, match="regression must be"):
        census.load_census_income(tiny["root"], regression="income")  # type: ignore[arg-type]


def test_wrong_counts_and_bad_rows_name_the_file(
    tiny: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(census._PUBLISHED, "train", (199_523, 12_382, None))
    with pytest.raises(ArchiveError, match=r"census-income\.data\.gz: 40 records.*199523"):
        census.load_census_income(tiny["root"], cache_dir=tiny["cache"])
    with pytest.raises(ArchiveError, match="f: record 1 has 3 fields, expected 42"):
        census._parse(b"1, 2, 3\n" * 2, "f")


def test_fetch_from_loopback(tiny: dict, tmp_path: Path, http_server: tuple[str, dict]) -> None:
    base, routes = http_server
    for name in ("census-income.data.gz", "census-income.test.gz"):
        body = (tiny["root"] / census.FOLDER / name).read_bytes()
        routes[f"/uci/{name}"] = (body, len(body))
    fresh = tmp_path / "fresh"
    paths = census.CENSUS_FILES.fetch(fresh, base_url=f"{base}/uci", progress=False)
    assert [p.name for p in paths] == ["census-income.data.gz", "census-income.test.gz"]
    loaded = census.load_census_income(fresh, cache_dir=tmp_path / "c2")
    assert loaded.sizes("train")[0] == 40


@pytest.mark.slow
def test_real_files_counts(shared_data: Path, tmp_path: Path) -> None:
    data = census.load_census_income(shared_data, cache_dir=tmp_path)
    assert data.sizes("train") == (199_523,) * 3
    assert data.sizes("val") == data.sizes("test") == (49_881,) * 3
    assert int(data.train[0].y.sum()) == 12_382
    never = int(data.val[1].y.sum()) + int(data.test[1].y.sum())
    assert never == 43_143
    assert data.input_shape == (502,)
