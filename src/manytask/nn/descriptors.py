"""Task descriptors ``z_i`` (CS330, multi-task lecture: ``f_theta(y | x, z_i)``).

The lecture lists what ``z_i`` can be; this module builds each as a ``[K, D]`` table, row
``i`` for task ``i``:

- ``"one_hot"``: the task index, ``z_i = e_i`` (:func:`one_hot_descriptors`);
- ``"metadata"``: a vector of facts about the task (a user's features, an alphabet's script
  family and size, a label's base rate), from ``TaskSpec.metadata``, standardised per column
  over the tasks by default (:func:`metadata_descriptors`);
- ``"text"``: the task's natural-language description embedded by a pluggable text encoder
  (:func:`text_descriptors`, :mod:`manytask.nn.text_encoders`).

:func:`task_descriptors` concatenates any of them. Metadata and text descriptors can describe a
task never trained on (a new user, a new alphabet), which a one-hot index cannot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor

from manytask.nn.tasks import TaskLike
from manytask.nn.text_encoders import HashedNgramEncoder, TextEncoder

__all__ = [
    "DescriptorKind",
    "metadata_descriptors",
    "one_hot_descriptors",
    "task_descriptors",
    "text_descriptors",
]

DescriptorKind = Literal["one_hot", "metadata", "text"]
_KINDS: tuple[str, ...] = get_args(DescriptorKind)


def one_hot_descriptors(num_tasks: int) -> Tensor:
    """``[K, K]`` identity: ``z_i = e_i``.

    Example:
        >>> one_hot_descriptors(3)[1]
        tensor([0., 1., 0.])
    """
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive int; got {num_tasks!r}")
    return torch.eye(num_tasks)


def metadata_descriptors(tasks: Sequence[TaskLike], standardize: bool = True) -> Tensor:
    """``[K, M]`` from every task's ``metadata``; standardised per column over the tasks.

    Standardising (zero mean, unit standard deviation over the ``K`` tasks; a constant column
    becomes zeros) puts facts of different units (a count, a rate) on one scale.

    Example:
        >>> from types import SimpleNamespace as T
        >>> tasks = [T(name="a", metadata=(10.0, 0.5)), T(name="b", metadata=(30.0, 0.5))]
        >>> metadata_descriptors(tasks)
        tensor([[-1.,  0.],
                [ 1.,  0.]])
    """
    if not tasks:
        raise ValueError("metadata_descriptors needs at least one task")
    rows = [tuple(t.metadata) for t in tasks]
    lengths = {len(r) for r in rows}
    if len(lengths) != 1 or 0 in lengths:
        found = {t.name: len(r) for t, r in zip(tasks, rows, strict=True)}
        raise ValueError(
            "metadata descriptors need the same non-zero number of metadata values for every "
            f"task; found {found}. Fill TaskSpec.metadata for every task."
        )
    for t, r in zip(tasks, rows, strict=True):
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in r):
            raise ValueError(f"task {t.name!r}: metadata must be finite numbers; got {r}")
    z = torch.tensor(rows, dtype=torch.float32)
    if standardize:
        mean = z.mean(0, keepdim=True)
        std = z.std(0, unbiased=False, keepdim=True)
        z = torch.where(std > 0, (z - mean) / std.clamp_min(1e-12), torch.zeros_like(z))
    return z


def text_descriptors(tasks: Sequence[TaskLike], encoder: TextEncoder | None = None) -> Tensor:
    """``[K, D]``: every task's ``description`` embedded by ``encoder``.

    Args:
        tasks: the tasks (each needs a non-empty ``description``).
        encoder: a :class:`~manytask.nn.text_encoders.TextEncoder` (default
            :class:`~manytask.nn.text_encoders.HashedNgramEncoder`).

    Example:
        >>> from types import SimpleNamespace as T
        >>> tasks = [T(name="a", description="Greek letters"), T(name="b", description="Runes")]
        >>> text_descriptors(tasks).shape
        torch.Size([2, 256])
    """
    if not tasks:
        raise ValueError("text_descriptors needs at least one task")
    missing = [t.name for t in tasks if not str(getattr(t, "description", "")).strip()]
    if missing:
        raise ValueError(
            f"text descriptors need a description for every task; tasks {missing} have none. "
            "Fill TaskSpec.description or use descriptor='one_hot'/'metadata'."
        )
    enc = encoder if encoder is not None else HashedNgramEncoder()
    z = enc.encode([t.description for t in tasks])
    if tuple(z.shape) != (len(tasks), enc.dim):
        raise ValueError(
            f"text encoder {enc!r} returned {tuple(z.shape)}, expected ({len(tasks)}, {enc.dim})"
        )
    return z.to(torch.float32)


def task_descriptors(
    tasks: Sequence[TaskLike],
    kinds: DescriptorKind | Sequence[DescriptorKind] = "one_hot",
    *,
    text_encoder: TextEncoder | None = None,
    standardize_metadata: bool = True,
) -> Tensor:
    """The ``[K, D]`` descriptor table of ``tasks``: the chosen kinds, concatenated.

    Args:
        tasks: the ``K`` tasks.
        kinds: ``"one_hot"``, ``"metadata"``, ``"text"``, or several (concatenated in order).
        text_encoder: encoder for ``"text"`` (default hashed n-grams).
        standardize_metadata: standardise metadata columns over the tasks.

    Example:
        >>> from types import SimpleNamespace as T
        >>> tasks = [T(name=n, description=n, metadata=(float(i),)) for i, n in enumerate("ab")]
        >>> task_descriptors(tasks, ["one_hot", "metadata"])
        tensor([[ 1.,  0., -1.],
                [ 0.,  1.,  1.]])
    """
    chosen = [kinds] if isinstance(kinds, str) else list(kinds)
    if not chosen or any(k not in _KINDS for k in chosen):
        raise ValueError(f"descriptor kinds must be among {_KINDS}; got {kinds!r}")
    parts = []
    for kind in chosen:
        if kind == "one_hot":
            parts.append(one_hot_descriptors(len(tasks)))
        elif kind == "metadata":
            parts.append(metadata_descriptors(tasks, standardize_metadata))
        else:
            parts.append(text_descriptors(tasks, text_encoder))
    return torch.cat(parts, dim=1)
