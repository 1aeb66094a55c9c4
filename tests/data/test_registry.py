"""The data-set registry: one loader signature, clear errors, every entry loadable."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from manytask.data import registry
from manytask.data.multitask import MultiTaskData


def test_every_loader_has_the_common_signature() -> None:
    for name, info in registry.DATASETS.items():
        if info.load is None:
            continue
        params = inspect.signature(info.load).parameters
        first = next(iter(params.values()))
        assert first.name == "data_dir" and first.default is None, name
        assert params["seed"].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert params["seed"].default == 0, name


def test_errors_name_the_valid_choices() -> None:
    with pytest.raises(ValueError, match="Did you mean 'census_income'"):
        registry.get_dataset("census_incme")
    with pytest.raises(ValueError, match="not a multi-task data set"):
        registry.load_dataset("omniglot")


def test_generated_and_embedded_sets_load_without_a_data_dir(tmp_path: Path) -> None:
    data = registry.load_dataset("mmoe_synthetic", tmp_path, p=0.2, sizes=(20, 5, 5), dim=4)
    assert isinstance(data, MultiTaskData) and data.num_tasks == 2
    assert registry.verify_dataset("mmoe_synthetic", tmp_path) == {}
    assert registry.fetch_dataset("omniglot_alphabets", tmp_path) == []


@pytest.mark.parametrize(
    "name", ["mnist", "fashion_mnist", "multi_mnist", "multi_fashion", "yeast", "scene", "emotions"]
)
def test_file_backed_sets_load_from_shared_data(
    shared_data: Path, tmp_path: Path, name: str
) -> None:
    data = registry.load_dataset(name, shared_data, cache_dir=tmp_path)
    assert data.name == name
    assert all(t.description for t in data.tasks)
    assert {e["status"] for e in registry.verify_dataset(name, shared_data).values()} == {"ok"}
