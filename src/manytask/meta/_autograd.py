"""One vector-Jacobian product helper shared by the hand-written autograd Functions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def vjp(
    outputs: Sequence[Tensor], grads: Sequence[Tensor | None], inputs: Sequence[Tensor]
) -> list[Tensor | None]:
    """``sum_k <outputs[k], grads[k]>`` differentiated with respect to ``inputs``.

    Taken as one scalar rather than through ``autograd.grad``'s ``grad_outputs`` (whose first
    use imports sympy, ~4 s). Inputs that do not require grad, or that the outputs do not
    depend on, get ``None``; so does everything when no output requires grad.
    """
    pairs = [(o, g) for o, g in zip(outputs, grads, strict=True) if g is not None]
    wanted = [x for x in inputs if x.requires_grad]
    if not wanted or not any(o.requires_grad for o, _ in pairs):
        return [None] * len(inputs)
    terms = [(o * g.to(o.dtype)).sum() for o, g in pairs if o.requires_grad]
    dot = sum(terms[1:], terms[0])  # the order in which the terms were always added
    found = iter(torch.autograd.grad(dot, wanted, allow_unused=True))
    return [next(found) if x.requires_grad else None for x in inputs]
