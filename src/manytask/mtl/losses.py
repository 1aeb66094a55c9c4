"""Each task's loss ``L_i`` from its spec: cross-entropy, binary cross-entropy or MSE.

A task spec (:class:`manytask.data.TaskSpec`, or anything with ``kind``, ``loss`` and
``num_outputs``) names its loss; :func:`task_loss` applies it to the model's output for the
task and the task's targets, so tasks of different kinds mix in one run:

- ``cross_entropy`` (multiclass): ``output [B, C]`` logits, ``target [B]`` class ids;
- ``bce`` (binary): ``output [B, 1]`` logits, ``target [B]`` 0/1 floats (on logits, for
  numerical stability);
- ``mse`` (regression): ``output [B, d]``, ``target [B, d]``.

Each is the mean over the batch (and the target's dimensions), so ``L_i`` does not grow with
the batch size.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

__all__ = ["task_loss"]


def task_loss(spec: Any, output: Tensor, target: Tensor) -> Tensor:
    """The scalar loss of one task's mini-batch.

    Args:
        spec: the task (its ``loss``: ``"cross_entropy"``, ``"bce"`` or ``"mse"``).
        output: the model's output for the task, ``[B, num_outputs]``.
        target: ``[B]`` class ids, ``[B]`` 0/1 labels or ``[B, d]`` values.

    Example:
        >>> import torch
        >>> from manytask.data import TaskSpec
        >>> task_loss(TaskSpec("t", "binary", 1), torch.zeros(4, 1), torch.ones(4)).item()
        0.6931471824645996
    """
    loss = spec.loss
    if loss == "cross_entropy":
        return F.cross_entropy(output.float(), target)
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(output.float().reshape(-1), target.float())
    if loss == "mse":
        return F.mse_loss(output.float().reshape(target.shape), target.float())
    raise ValueError(
        f"task {spec.name!r}: unknown loss {loss!r}; expected cross_entropy, bce or mse"
    )
