"""Omniglot by alphabet: each of the 50 alphabets is a task classifying its own characters.

The lecture's "handwriting recognition per language" (multi-task classification with the same
loss and a different ``p_i(x)`` per task), as used by soft layer ordering (Meyerson &
Miikkulainen 2018) and CMTR (Liang et al. 2018): task ``i`` is a ``C_i``-way classification of
the characters of alphabet ``i`` (``C_i`` from 14 to 55), label = the character's index within
its alphabet (``characterNN`` order).

Split by drawer (each character was drawn once by each of 20 people): drawers 1-14 train,
15-17 validation, 18-20 test, so every split holds every character (14 / 3 / 3 images per
character) and no drawing is in two splits. Built from the 28x28 store shipped in the package
(:func:`manytask.data.omniglot.load_omniglot` with ``source="embedded"``), so it needs neither a
data directory nor a network. ``x`` is ``uint8 [n, 1, 28, 28]`` with ink = 255.

Descriptors ``z_i``:

- ``description``: e.g. "handwritten characters of the Korean alphabet, 40 characters; script
  type: alphabet; Omniglot background set";
- ``metadata`` (7 numbers): number of characters; 1 if the alphabet is in Lake et al.'s
  evaluation set, else 0; a one-hot script type over (alphabet, abjad, abugida, syllabary,
  constructed or other), following Daniels' typology of writing systems (Daniels & Bright,
  *The World's Writing Systems*, 1996). "Constructed or other" holds the invented and fictional
  scripts (e.g. Tengwar, Futurama, Aurek-Besh, Atlantean) and Braille, a tactile code; Korean
  (Hangul, featural) is counted as an alphabet; the Canadian Aboriginal syllabics, despite
  their name, are abugidas in that typology. The table is :data:`SCRIPT_TYPE`.
"""

from __future__ import annotations

import os

import torch

from manytask.data.multitask import MultiTaskData, TaskData, TaskSpec
from manytask.data.omniglot import _split_json, load_omniglot

__all__ = ["DRAWER_SPLIT", "SCRIPT_TYPE", "SCRIPT_TYPES", "load_omniglot_alphabets"]

DRAWER_SPLIT: dict[str, tuple[int, ...]] = {
    "train": tuple(range(1, 15)),
    "val": (15, 16, 17),
    "test": (18, 19, 20),
}
"""Which drawers (1..20) form each split."""

SCRIPT_TYPES: tuple[str, ...] = (
    "alphabet",
    "abjad",
    "abugida",
    "syllabary",
    "constructed or other",
)

_BY_TYPE: dict[str, tuple[str, ...]] = {
    "alphabet": (
        "Anglo-Saxon_Futhorc",
        "Armenian",
        "Asomtavruli_(Georgian)",
        "Avesta",
        "Cyrillic",
        "Glagolitic",
        "Greek",
        "Korean",
        "Latin",
        "Mkhedruli_(Georgian)",
        "Mongolian",
        "N_Ko",
        "Old_Church_Slavonic_(Cyrillic)",
        "Tifinagh",
    ),
    "abjad": (
        "Early_Aramaic",
        "Hebrew",
        "Malay_(Jawi_-_Arabic)",
        "Syriac_(Estrangelo)",
        "Syriac_(Serto)",
    ),
    "abugida": (
        "Balinese",
        "Bengali",
        "Blackfoot_(Canadian_Aboriginal_Syllabics)",
        "Burmese_(Myanmar)",
        "Ge_ez",
        "Grantha",
        "Gujarati",
        "Gurmukhi",
        "Inuktitut_(Canadian_Aboriginal_Syllabics)",
        "Kannada",
        "Malayalam",
        "Manipuri",
        "Ojibwe_(Canadian_Aboriginal_Syllabics)",
        "Oriya",
        "Sanskrit",
        "Sylheti",
        "Tagalog",
        "Tibetan",
    ),
    "syllabary": ("Japanese_(hiragana)", "Japanese_(katakana)"),
    "constructed or other": (
        "Alphabet_of_the_Magi",
        "Angelic",
        "Arcadian",
        "Atemayar_Qelisayer",
        "Atlantean",
        "Aurek-Besh",
        "Braille",
        "Futurama",
        "Keble",
        "Tengwar",
        "ULOG",
    ),
}
SCRIPT_TYPE: dict[str, str] = {a: t for t, names in _BY_TYPE.items() for a in names}
"""The script type of each of the 50 Omniglot alphabets (see the module docstring)."""


def load_omniglot_alphabets(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
) -> MultiTaskData:
    """The 50 Omniglot alphabets as 50 classification tasks (from the embedded 28x28 store).

    Args:
        data_dir: accepted for the common loader signature; not needed (the store ships
            with the package).
        seed: accepted for the common signature; the split is fixed by drawer index
            (:data:`DRAWER_SPLIT`), so nothing here is random.

    Returns:
        50 multiclass tasks named after the alphabets (sorted), 14 / 3 / 3 images per
        character in train / val / test; ``x`` ``uint8 [n, 1, 28, 28]``.

    Example:
        >>> data = load_omniglot_alphabets()
        >>> data.num_tasks, data.tasks[data.task_names.index("Korean")].num_outputs
        (50, 40)
        >>> sum(data.sizes("train")), sum(data.sizes("val")), sum(data.sizes("test"))
        (22722, 4869, 4869)
    """
    del data_dir, seed  # see the docstring
    store = load_omniglot(28, source="embedded", progress=False)
    evaluation = set(_split_json("omniglot_lake.json")["evaluation"])
    drawer_cols = {
        split: torch.tensor([d - 1 for d in drawers]) for split, drawers in DRAWER_SPLIT.items()
    }
    if not torch.equal(store.drawers[0], torch.arange(1, 21)):
        raise ValueError(f"expected drawers 1..20 in store order, got {store.drawers[0].tolist()}")
    tasks: list[TaskSpec] = []
    parts: dict[str, list[TaskData]] = {"train": [], "val": [], "test": []}
    for a, alphabet in enumerate(store.alphabets):
        classes = torch.nonzero(store.alphabet_of == a).flatten()
        n = len(classes)
        kind = SCRIPT_TYPE[alphabet]
        in_eval = alphabet in evaluation
        pretty = alphabet.replace("_", " ")
        tasks.append(
            TaskSpec(
                alphabet,
                "multiclass",
                n,
                description=f"handwritten characters of the {pretty} alphabet, {n} characters; "
                f"script type: {kind}; Omniglot {'evaluation' if in_eval else 'background'} set",
                metadata=(
                    float(n),
                    1.0 if in_eval else 0.0,
                    *(1.0 if t == kind else 0.0 for t in SCRIPT_TYPES),
                ),
            )
        )
        images = store.images[classes]  # [n, 20, 28, 28]
        for split, cols in drawer_cols.items():
            x = images[:, cols].reshape(-1, 1, 28, 28)
            y = torch.arange(n).repeat_interleave(len(cols))
            parts[split].append(TaskData(x, y))
    return MultiTaskData(
        "omniglot_alphabets",
        tuple(tasks),
        tuple(parts["train"]),
        tuple(parts["val"]),
        tuple(parts["test"]),
        input_shape=(1, 28, 28),
        shared_inputs=False,
    )
