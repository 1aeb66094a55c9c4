"""A functional Adam step on a few numbers kept in a method's state (no ``torch.optim``).

Loss weightings with learned parameters (uncertainty weighting's log-variances, GradNorm's
weights, FAMO's logits) keep those parameters, and Adam's moments, in their explicit state,
so that a checkpoint holds them and nothing outside the method steps them. The update is
``torch.optim.Adam``'s (Kingma & Ba 2015, Algorithm 1, L2 weight decay added to the gradient),
element by element with a per-element step count, because a step that samples tasks moves only
the entries of its tasks.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["adam_init", "adam_step"]


def adam_init(values: Tensor) -> dict[str, Tensor]:
    """Adam state for ``values`` ``[K]``: the values, both moments and the step counts."""
    v = values.to(torch.float64)
    return {
        "value": v.clone(),
        "m": torch.zeros_like(v),
        "v": torch.zeros_like(v),
        "t": torch.zeros_like(v),
    }


def adam_step(
    state: dict[str, Tensor],
    grad: Tensor,
    index: Tensor,
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> dict[str, Tensor]:
    """One Adam step of the entries ``index`` with gradient ``grad`` ``[len(index)]``.

    Example:
        >>> s = adam_init(torch.zeros(2))
        >>> s = adam_step(s, torch.tensor([1.0]), torch.tensor([1]), lr=0.1)
        >>> [round(v, 6) for v in s["value"].tolist()]   # the first step moves by lr * sign(grad)
        [0.0, -0.1]
    """
    b1, b2 = betas
    out = {k: t.to("cpu", torch.float64).clone() for k, t in state.items()}
    g = grad.to("cpu", torch.float64)
    x = out["value"][index]
    if weight_decay:
        g = g + weight_decay * x
    t = out["t"][index] + 1.0
    m = b1 * out["m"][index] + (1.0 - b1) * g
    v = b2 * out["v"][index] + (1.0 - b2) * g * g
    m_hat = m / (1.0 - b1**t)
    v_hat = v / (1.0 - b2**t)
    out["value"][index] = x - lr * m_hat / (v_hat.sqrt() + eps)
    out["m"][index], out["v"][index], out["t"][index] = m, v, t
    return out
