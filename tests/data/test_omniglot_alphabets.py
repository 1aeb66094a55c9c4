"""Omniglot by alphabet: 50 tasks from the embedded store, split by drawer."""

from __future__ import annotations

import pytest
import torch

from manytask.data.multitask import MultiTaskData
from manytask.data.omniglot import _load_embedded, _split_json
from manytask.data.omniglot_alphabets import DRAWER_SPLIT, SCRIPT_TYPE, load_omniglot_alphabets


@pytest.fixture(scope="module")
def data() -> MultiTaskData:
    return load_omniglot_alphabets()


def test_tasks_and_split_sizes(data: MultiTaskData) -> None:
    assert data.num_tasks == 50 and not data.shared_inputs
    ways = [t.num_outputs for t in data.tasks]
    assert sum(ways) == 1623 and min(ways) == 14 and max(ways) == 55
    assert data.sizes("train") == tuple(14 * w for w in ways)
    assert data.sizes("val") == data.sizes("test") == tuple(3 * w for w in ways)
    assert sorted(sum(DRAWER_SPLIT.values(), ())) == list(range(1, 21))
    korean = data.tasks[data.task_names.index("Korean")]
    assert korean.description.startswith("handwritten characters of the Korean alphabet, 40")


def test_every_image_traces_to_its_character_and_drawer(data: MultiTaskData) -> None:
    store = _load_embedded()
    a = data.task_names.index("Tengwar")
    classes = torch.nonzero(store.alphabet_of == store.alphabets.index("Tengwar")).flatten()
    for split, drawers in DRAWER_SPLIT.items():
        part = data.split(split)[a]  # type: ignore[arg-type]
        for row in (0, len(part) - 1):
            char, d = divmod(row, len(drawers))
            assert int(part.y[row]) == char
            assert torch.equal(part.x[row, 0], store.images[classes[char], drawers[d] - 1])


def test_metadata_is_factual(data: MultiTaskData) -> None:
    assert set(SCRIPT_TYPE) == set(data.task_names)
    evaluation = set(_split_json("omniglot_lake.json")["evaluation"])
    meta = data.metadata()
    assert meta.shape == (50, 7)
    assert meta[:, 0].tolist() == [float(t.num_outputs) for t in data.tasks]
    assert meta[:, 1].tolist() == [float(n in evaluation) for n in data.task_names]
    assert bool((meta[:, 2:].sum(1) == 1).all())
    assert SCRIPT_TYPE["Hebrew"] == "abjad" and SCRIPT_TYPE["Japanese_(hiragana)"] == "syllabary"
