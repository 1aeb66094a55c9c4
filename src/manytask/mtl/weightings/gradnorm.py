"""GradNorm: learn the loss weights so that the tasks' gradient norms train at equal rates.

Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for Adaptive Loss
Balancing in Deep Multitask Networks", ICML 2018, Section 3. At a chosen shared layer ``W``
(the last shared weight, as in the paper), with ``G_i = ||grad_W w_i L_i||``, their mean
``G_bar``, the inverse training rates ``r_i = L~_i / mean_j L~_j`` (``L~_i = L_i(t) / L_i(0)``)
and an asymmetry ``alpha``, the weights follow the gradient of (eq. 2)

    L_grad = sum_i | G_i - G_bar r_i^alpha |

with ``G_bar r_i^alpha`` held constant: ``dL_grad/dw_i = sign(G_i - target_i) ||grad_W L_i||``.
Each step the model descends ``sum_i w_i L_i`` with the current weights, the weights take one
Adam step on ``L_grad`` (learning rate ``lr``), and they are renormalised to sum to the number of
tasks (``w_i > 0``).

The norms ``||grad_W L_i||`` come from the same machinery as the gradient methods: inside
:meth:`GradNorm.forward_context` the one-backward segment path (only for ``W``), else one
vector-Jacobian product per task through the heads and ``W`` only.

State: the weights with their Adam moments, and every task's first loss ``L_i(0)``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Annotated, Any

import torch
from torch import Tensor, nn

from manytask.mtl.base import MTLMethod, SharedModel, State, StepInfo, check_losses
from manytask.mtl.jacobian import TaskCapture
from manytask.mtl.weightings._adam import adam_init, adam_step
from manytask.typed import Range

__all__ = ["GradNorm", "gradnorm_gradient"]


def gradnorm_gradient(
    weights: Tensor, norms: Tensor, losses: Tensor, initial: Tensor, alpha: float
) -> Tensor:
    """``dL_grad / dw [k]`` for weights ``w``, per-task norms ``||grad_W L_i||`` and losses.

    Example:
        >>> w, n = torch.ones(2), torch.tensor([1.0, 3.0])
        >>> gradnorm_gradient(w, n, torch.ones(2), torch.ones(2), alpha=1.5)  # equal rates
        tensor([-1.,  3.])
    """
    g = weights * norms
    ratio = losses / initial
    r = ratio / ratio.mean()
    target = g.mean() * r.pow(alpha)
    return torch.sign(g - target) * norms


class GradNorm(MTLMethod):
    """GradNorm (Chen et al. 2018).

    Args:
        alpha: the asymmetry (1.5 in the paper's NYUv2 runs; 0 equalises the norms).
        lr: Adam learning rate of the weights.

    Example:
        >>> GradNorm()
        GradNorm(alpha=1.5, lr=0.01)
    """

    name = "gradnorm"

    def __init__(
        self,
        alpha: Annotated[float, Range(min=0)] = 1.5,
        lr: Annotated[float, Range(min=0, open=True)] = 0.01,
    ) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha >= 0:
            raise ValueError(f"gradnorm: alpha must be a number >= 0; got {alpha!r}")
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
            raise ValueError(f"gradnorm: lr must be a number > 0; got {lr!r}")
        self.alpha = float(alpha)
        self.lr = float(lr)
        self._capture: TaskCapture | None = None
        self._model: Any = None
        self._segments: tuple[int, ...] | None = None

    def hyperparameters(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "lr": self.lr}

    def init(self, num_tasks: int) -> State:
        super().init(num_tasks)
        return {
            "weights": adam_init(torch.ones(num_tasks)),
            "initial": torch.full((num_tasks,), math.nan, dtype=torch.float64),
        }

    def _layer(self, model: Any) -> nn.Parameter:
        weights = [p for p in model.shared_parameters() if p.dim() >= 2]
        if not weights:
            raise ValueError(
                "gradnorm: the model has no shared weight matrix to measure gradient norms at "
                "(GradNorm needs a shared layer)"
            )
        return weights[-1]

    def _capture_for(self, model: Any) -> TaskCapture:
        if self._capture is None or self._model is not model:
            self._capture = TaskCapture(model, [self._layer(model)], fallback="loop")
            self._model = model
        return self._capture

    @contextlib.contextmanager
    def forward_context(self, model: nn.Module, segments: Sequence[int] | None) -> Iterator[None]:
        """Wrap the forward pass so the norms come out of one partial backward."""
        capture = self._capture_for(model)
        self._segments = tuple(segments) if segments is not None else None
        with capture:
            yield

    def backward(
        self, losses: Tensor, model: SharedModel, state: State, info: StepInfo
    ) -> tuple[dict[str, Tensor], State]:
        check_losses(losses, info, self.name)
        idx = info.tasks.to("cpu", torch.long)
        capture = self._capture_for(model)
        segments, self._segments = self._segments, None
        jac, _ = capture.jacobian(losses, segments, retain_graph=True)
        norms = jac.norm(dim=1).to("cpu", torch.float64)
        loss = losses.detach().to("cpu", torch.float64)
        initial = state["initial"].to("cpu", torch.float64).clone()
        fresh = torch.isnan(initial[idx])
        initial[idx] = torch.where(fresh, loss, initial[idx])
        w_all = state["weights"]["value"].to("cpu", torch.float64)
        w = w_all[idx]
        objective = (w.to(losses) * losses).sum()
        objective.backward()
        grad = gradnorm_gradient(w, norms, loss, initial[idx].clamp_min(1e-12), self.alpha)
        new = adam_step(state["weights"], grad, idx, lr=self.lr)
        stepped = new["value"][idx].clamp_min(1e-6)
        new["value"][idx] = stepped * (idx.shape[0] / stepped.sum())
        logs = {"objective": objective.detach(), "weight": w.to(losses)}
        return logs, {"weights": new, "initial": initial}
