"""What the models and descriptors need to know about a task (a structural stand-in).

``manytask.data.multitask.TaskSpec`` is the task spec of the library (``T_i = {p_i(x),
p_i(y|x), L_i}`` plus its descriptor ``z_i``); ``nn`` reads only the fields below, so any
object with them works, the real ``TaskSpec`` included, and ``nn`` does not depend on the
data package.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["TaskLike"]


@runtime_checkable
class TaskLike(Protocol):
    """The fields of a task spec that models and descriptors read.

    Attributes:
        name: the task's name (used in error messages).
        kind: ``"multiclass"``, ``"binary"`` or ``"regression"``.
        num_outputs: classes (multiclass), 1 (binary), target size (regression): the width of
            the task's output ``[B, num_outputs]``.
        description: natural-language descriptor ``z_i`` (for text encoders).
        metadata: metadata descriptor vector ``z_i`` (same length for every task).
    """

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def num_outputs(self) -> int: ...

    @property
    def description(self) -> str: ...

    @property
    def metadata(self) -> tuple[float, ...]: ...
