"""Gradient aggregators as multi-task methods: per-task gradients -> direction -> ``.grad``.

This is step 3 of issue 9's three steps, the only one that touches the model. A
:class:`GradientMethod` wraps a pure :class:`~manytask.mtl.aggregators.Aggregator`:

1. ``J [k, P]``, the gradients of the step's ``k`` losses w.r.t. ``theta_sh``, in about one
   backward pass when the forward pass ran inside :meth:`GradientMethod.forward_context` with
   the rows of each task's mini-batch (:class:`~manytask.mtl.jacobian.TaskCapture`), else by
   the general path (``k`` vector-Jacobian products); the same backward gives every
   task-specific parameter ``theta_i`` its own task's gradient;
2. ``d = aggregator(J)`` (with its state and, when it is randomised, a generator whose state
   lives in the method state, so a resumed run draws the same numbers);
3. ``d`` is written to ``.grad`` of ``theta_sh``; the optimiser steps.

Every step also adds the pairwise cosine similarities of the task gradients (read off the
Gramian ``J J^T``, no extra pass) to a running sum in the state, so a run's gradient-conflict
heatmap costs nothing (:mod:`manytask.mtl.diagnostics.conflict`), and logs their mean and the
fraction of conflicting pairs as a curve.

Each registered method is a small subclass with the aggregator's typed hyper-parameters plus
``jacobian`` (the general path's flavour) and, for randomised ones, ``seed``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Annotated, Any

import torch
from torch import Tensor, nn

from manytask.mtl.aggregators import (
    IMTLG,
    MGDA,
    Aggregator,
    AlignedMTL,
    CAGrad,
    GradDrop,
    GradVac,
    GramianAggregator,
    Mean,
    NashMTL,
    PCGrad,
    UPGrad,
)
from manytask.mtl.aggregators.aligned_mtl import Scale
from manytask.mtl.aggregators.cagrad import Rescale
from manytask.mtl.aggregators.upgrad import Pref
from manytask.mtl.base import MTLMethod, SharedModel, State, StepInfo, check_losses
from manytask.mtl.jacobian import Fallback, TaskCapture, representation_gramian
from manytask.typed import Range

__all__ = [
    "AlignedMTLMethod",
    "CAGradMethod",
    "GradDropMethod",
    "GradVacMethod",
    "GradientMethod",
    "IMTLGMethod",
    "MGDAMethod",
    "MGDAUBMethod",
    "MeanMethod",
    "NashMTLMethod",
    "PCGradMethod",
    "UPGradMethod",
    "pairwise_cosines",
]


def pairwise_cosines(gramian: Tensor) -> Tensor:
    """``[K, K]`` cosine similarities from a Gramian (0 where a gradient is zero).

    Example:
        >>> pairwise_cosines(torch.tensor([[1.0, -1.0], [-1.0, 4.0]]))
        tensor([[ 1.0000, -0.5000],
                [-0.5000,  1.0000]])
    """
    norms = gramian.diagonal().clamp_min(0.0).sqrt()
    denom = norms[:, None] * norms[None, :]
    cos = torch.where(denom > 0, gramian / denom.clamp_min(1e-300), torch.zeros_like(gramian))
    return cos.clamp(-1.0, 1.0)


class GradientMethod(MTLMethod):
    """Per-task gradients, an aggregator, ``.grad``: the base of every gradient method.

    Args:
        aggregator: the pure aggregator.
        seed: seed of the generator of a randomised aggregator (its state is in the method
            state from then on).
        jacobian: the general path when the one-backward segment path does not apply:
            ``"auto"``, ``"batched"`` or ``"loop"`` (see :class:`TaskCapture`).
    """

    name = "gradient"

    def __init__(self, aggregator: Aggregator, *, seed: int = 0, jacobian: Fallback = "auto"):
        if not isinstance(aggregator, Aggregator):
            raise ValueError(f"{self.name}: aggregator must be an Aggregator; got {aggregator!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"{self.name}: seed must be an int; got {seed!r}")
        if jacobian not in ("auto", "batched", "loop"):
            raise ValueError(
                f"{self.name}: jacobian must be 'auto', 'batched' or 'loop'; got {jacobian!r}"
            )
        self.aggregator = aggregator
        self.seed = seed
        self.jacobian = jacobian
        self._capture: TaskCapture | None = None
        self._capture_model: nn.Module | None = None
        self._segments: tuple[int, ...] | None = None

    def hyperparameters(self) -> dict[str, Any]:
        out = dict(self.aggregator.hyperparameters())
        if self.aggregator.stochastic:
            out["seed"] = self.seed
        out["jacobian"] = self.jacobian
        return out

    def init(self, num_tasks: int) -> State:
        super().init(num_tasks)
        state: State = {
            "aggregator": self.aggregator.init(num_tasks),
            "cos_sum": torch.zeros(num_tasks, num_tasks, dtype=torch.float64),
            "cos_count": torch.zeros(num_tasks, num_tasks, dtype=torch.float64),
        }
        if self.aggregator.stochastic:
            state["rng"] = torch.Generator().manual_seed(self.seed).get_state()
        return state

    # -- the forward pass ------------------------------------------------------------------

    def _capture_for(self, model: Any, num_tasks: int) -> TaskCapture:
        if self._capture is None or self._capture_model is not model:
            shared = list(model.shared_parameters())
            specific = _task_parameters(model, range(num_tasks))
            self._capture = TaskCapture(model, shared, exclude=specific, fallback=self.jacobian)
            self._capture_model = model
        return self._capture

    @contextlib.contextmanager
    def forward_context(self, model: nn.Module, segments: Sequence[int] | None) -> Iterator[None]:
        """Wrap the step's forward pass so that :meth:`backward` gets ``J`` in one backward.

        Args:
            model: the multi-task model.
            segments: rows of each task's mini-batch in the concatenated batch, in the order
                of the losses; ``None`` when the tasks share their inputs.
        """
        capture = self._capture_for(model, _num_tasks(model))
        self._segments = tuple(segments) if segments is not None else None
        with capture:
            yield

    # -- the update ------------------------------------------------------------------------

    def _jacobian(
        self, losses: Tensor, model: SharedModel, info: StepInfo
    ) -> tuple[Tensor, list[nn.Parameter], list[nn.Parameter], list[Tensor | None]]:
        shared = list(model.shared_parameters())
        heads = _task_parameters(model, info.tasks.tolist())
        capture = self._capture if self._capture_model is model else None
        segments = self._segments
        self._segments = None
        if capture is None:
            capture = self._capture_for(model, info.num_tasks)
            segments = None
        jac, head_grads = capture.jacobian(losses, segments, extra=heads)
        return jac, shared, heads, head_grads

    def backward(
        self, losses: Tensor, model: SharedModel, state: State, info: StepInfo
    ) -> tuple[dict[str, Tensor], State]:
        check_losses(losses, info, self.name)
        jac, shared, heads, head_grads = self._jacobian(losses, model, info)
        generator = None
        if self.aggregator.stochastic:
            generator = torch.Generator()
            generator.set_state(state["rng"])
        tasks = info.tasks.to("cpu", torch.long)
        logs: dict[str, Tensor] = {"objective": losses.detach().sum()}
        gram = (jac @ jac.T).to(torch.float64).cpu()
        if isinstance(self.aggregator, GramianAggregator):
            w, agg_state = self.aggregator.weights(
                gram, state["aggregator"], tasks=tasks, generator=generator
            )
            direction = w.to(jac) @ jac
            logs["weight"] = w.to(losses.device, losses.dtype).detach()
        else:
            direction, agg_state = self.aggregator.update(
                jac, state["aggregator"], tasks=tasks, generator=generator
            )
        _write_grads(shared, direction)
        for p, g in zip(heads, head_grads, strict=True):
            p.grad = None if g is None else g.detach()
        new_state = {**state, "aggregator": agg_state}
        if generator is not None:
            new_state["rng"] = generator.get_state()
        logs.update(_conflict_logs(gram, tasks, new_state, losses))
        return logs, new_state


def _conflict_logs(gram: Tensor, tasks: Tensor, state: State, losses: Tensor) -> dict[str, Tensor]:
    """Add the step's pairwise cosines to the running sums; log their mean and conflicts."""
    cos = pairwise_cosines(gram)
    k = cos.shape[0]
    cos_sum = state["cos_sum"].to("cpu", torch.float64).clone()
    cos_count = state["cos_count"].to("cpu", torch.float64).clone()
    idx = (tasks.unsqueeze(1), tasks.unsqueeze(0))
    cos_sum[idx] += cos
    cos_count[idx] += 1.0
    state["cos_sum"], state["cos_count"] = cos_sum, cos_count
    if k < 2:
        return {}
    off = ~torch.eye(k, dtype=torch.bool)
    pairs = cos[off]
    return {
        "grad_cosine": pairs.mean().to(losses.device, losses.dtype),
        "grad_conflict": (pairs < 0).to(torch.float64).mean().to(losses.device, losses.dtype),
    }


def _num_tasks(model: nn.Module) -> int:
    n = getattr(model, "num_tasks", None)
    if isinstance(n, int):
        return n
    raise ValueError(
        "the model does not say its number of tasks (model.num_tasks); build it with "
        "manytask.nn.conditioning"
    )


def _task_parameters(model: Any, tasks: Sequence[int] | range) -> list[nn.Parameter]:
    out: list[nn.Parameter] = []
    seen: set[int] = set()
    for t in tasks:
        for p in model.task_parameters(int(t)):
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def _write_grads(params: Sequence[nn.Parameter], direction: Tensor) -> None:
    start = 0
    for p in params:
        n = p.numel()
        p.grad = direction[start : start + n].view_as(p).to(p.dtype).clone()
        start += n


# -- the registered methods ---------------------------------------------------------------

Seed = Annotated[int, Range(min=0)]


class MeanMethod(GradientMethod):
    """The mean of the task gradients through the Jacobian path.

    The same direction as ``fixed`` weights of ``1/K``, at the price of the per-task gradients:
    choose it to track gradient conflicts of equal weighting (the cosines land in the run's
    diagnostics).

    Example:
        >>> MeanMethod()
        MeanMethod(jacobian='auto')
    """

    name = "mean"

    def __init__(self, jacobian: Fallback = "auto") -> None:
        super().__init__(Mean(), jacobian=jacobian)


class MGDAMethod(GradientMethod):
    """MGDA's min-norm direction over the shared parameters (Sener & Koltun 2018).

    Example:
        >>> MGDAMethod()
        MGDAMethod(jacobian='auto')
    """

    name = "mgda"

    def __init__(self, jacobian: Fallback = "auto") -> None:
        super().__init__(MGDA(), jacobian=jacobian)


class PCGradMethod(GradientMethod):
    """PCGrad (Yu et al. 2020); ``seed`` seeds its random task orders.

    Example:
        >>> PCGradMethod(seed=3)
        PCGradMethod(seed=3, jacobian='auto')
    """

    name = "pcgrad"

    def __init__(self, seed: Seed = 0, jacobian: Fallback = "auto") -> None:
        super().__init__(PCGrad(), seed=seed, jacobian=jacobian)


class GradDropMethod(GradientMethod):
    """GradDrop (Chen et al. 2020) on the shared parameters' gradients.

    Example:
        >>> GradDropMethod()
        GradDropMethod(leak=None, seed=0, jacobian='auto')
    """

    name = "graddrop"

    def __init__(
        self, leak: list[float] | None = None, seed: Seed = 0, jacobian: Fallback = "auto"
    ) -> None:
        super().__init__(GradDrop(leak), seed=seed, jacobian=jacobian)


class CAGradMethod(GradientMethod):
    """CAGrad (Liu et al. 2021).

    Example:
        >>> CAGradMethod(c=0.5)
        CAGradMethod(c=0.5, rescale='1+c^2', jacobian='auto')
    """

    name = "cagrad"

    def __init__(
        self,
        c: Annotated[float, Range(min=0)] = 0.4,
        rescale: Rescale = "1+c^2",
        jacobian: Fallback = "auto",
    ) -> None:
        super().__init__(CAGrad(c, rescale), jacobian=jacobian)


class GradVacMethod(GradientMethod):
    """GradVac (Wang et al. 2021); its similarity targets are part of the checkpoint.

    Example:
        >>> GradVacMethod(beta=0.01)
        GradVacMethod(beta=0.01, seed=0, jacobian='auto')
    """

    name = "gradvac"

    def __init__(
        self,
        beta: Annotated[float, Range(min=0, max=1)] = 0.5,
        seed: Seed = 0,
        jacobian: Fallback = "auto",
    ) -> None:
        super().__init__(GradVac(beta), seed=seed, jacobian=jacobian)


class IMTLGMethod(GradientMethod):
    """IMTL-G (Liu et al. 2021): equal projections on every task's gradient.

    Example:
        >>> IMTLGMethod()
        IMTLGMethod(jacobian='auto')
    """

    name = "imtl_g"

    def __init__(self, jacobian: Fallback = "auto") -> None:
        super().__init__(IMTLG(), jacobian=jacobian)


class NashMTLMethod(GradientMethod):
    """Nash-MTL (Navon et al. 2022); its warm start and step count are in the checkpoint.

    Example:
        >>> NashMTLMethod()
        NashMTLMethod(max_norm=1.0, update_weights_every=1, jacobian='auto')
    """

    name = "nash_mtl"

    def __init__(
        self,
        max_norm: Annotated[float, Range(min=0)] = 1.0,
        update_weights_every: Annotated[int, Range(min=1)] = 1,
        jacobian: Fallback = "auto",
    ) -> None:
        super().__init__(NashMTL(max_norm, update_weights_every), jacobian=jacobian)


class AlignedMTLMethod(GradientMethod):
    """Aligned-MTL (Senushkin et al. 2023).

    Example:
        >>> AlignedMTLMethod()
        AlignedMTLMethod(scale='min', jacobian='auto')
    """

    name = "aligned_mtl"

    def __init__(self, scale: Scale = "min", jacobian: Fallback = "auto") -> None:
        super().__init__(AlignedMTL(scale), jacobian=jacobian)


class UPGradMethod(GradientMethod):
    """UPGrad (Quinton & Rey 2024).

    Example:
        >>> UPGradMethod()
        UPGradMethod(pref='mean', jacobian='auto')
    """

    name = "upgrad"

    def __init__(self, pref: Pref = "mean", jacobian: Fallback = "auto") -> None:
        super().__init__(UPGrad(pref), jacobian=jacobian)


class MGDAUBMethod(GradientMethod):
    """MGDA-UB (Sener & Koltun 2018, Section 3.3): MGDA on the shared representation.

    The weights are MGDA's min-norm weights for the Gramian of ``grad_Z L_i``, ``Z`` the output
    of the model's ``representation`` module (``trunk`` for ``multi_head``); the trunk gets
    ``sum_i a_i grad L_i`` and each head its own task's gradient, one backward in all. ``Z``
    is captured by :meth:`forward_context`; a step whose forward pass ran outside it falls back
    to MGDA on the full Jacobian (with a warning).

    Args:
        representation: the attribute of the model whose output is ``Z``.

    Example:
        >>> MGDAUBMethod()
        MGDAUBMethod(representation='trunk', jacobian='auto')
    """

    name = "mgda_ub"

    def __init__(self, representation: str = "trunk", jacobian: Fallback = "auto") -> None:
        super().__init__(MGDA(), jacobian=jacobian)
        if not isinstance(representation, str) or not representation:
            raise ValueError(
                f"mgda_ub: representation must be a module name; got {representation!r}"
            )
        self.representation = representation
        self._z: Tensor | None = None
        self._warned = False

    def hyperparameters(self) -> dict[str, Any]:
        return {"representation": self.representation, "jacobian": self.jacobian}

    @contextlib.contextmanager
    def forward_context(self, model: nn.Module, segments: Sequence[int] | None) -> Iterator[None]:
        module = getattr(model, self.representation, None)
        if not isinstance(module, nn.Module):
            raise ValueError(
                f"mgda_ub: the model has no module {self.representation!r} whose output is the "
                "shared representation; use a multi_head model or set args.representation"
            )
        self._z = None
        self._segments = tuple(segments) if segments is not None else None

        def keep(mod: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if torch.is_grad_enabled() and isinstance(output, Tensor) and output.requires_grad:
                self._z = output

        handle = module.register_forward_hook(keep)
        try:
            yield
        finally:
            handle.remove()

    def backward(
        self, losses: Tensor, model: SharedModel, state: State, info: StepInfo
    ) -> tuple[dict[str, Tensor], State]:
        check_losses(losses, info, self.name)
        z, segments = self._z, self._segments
        self._z, self._segments = None, None
        if z is None:
            if not self._warned:
                warnings.warn(
                    "mgda_ub: the forward pass ran outside forward_context(), so the shared "
                    "representation was not captured; using MGDA on the full Jacobian",
                    stacklevel=2,
                )
                self._warned = True
            return super().backward(losses, model, state, info)
        if segments is not None and sum(segments) != z.shape[0]:
            segments = None  # Z rows are shared by the tasks (one pass over shared inputs)
        shared = list(model.shared_parameters())
        heads = _task_parameters(model, info.tasks.tolist())
        tasks = info.tasks.to("cpu", torch.long)
        track = segments is None  # with own rows per task, grad_Z L_i are orthogonal: no signal
        if segments is not None:
            gram = representation_gramian(losses, z, segments, retain_graph=True)
            w, agg_state = self.aggregator.weights(gram, state["aggregator"], tasks=tasks)  # type: ignore[attr-defined]
            grads = torch.autograd.grad(
                losses.sum(), [z, *heads], retain_graph=True, allow_unused=True
            )
            scale = torch.repeat_interleave(w.to(z), torch.tensor(segments, device=z.device))
            cot = grads[0] * scale.view(-1, *([1] * (z.dim() - 1)))
            head_grads = list(grads[1:])
        else:
            jz = _rep_rows(losses, z)
            gram = (jz @ jz.T).to(torch.float64).cpu()
            w, agg_state = self.aggregator.weights(gram, state["aggregator"], tasks=tasks)  # type: ignore[attr-defined]
            cot = (w.to(jz) @ jz).view_as(z)
            head_grads = list(
                torch.autograd.grad(losses.sum(), heads, retain_graph=True, allow_unused=True)
            )
        trunk_grads = torch.autograd.grad(z, shared, grad_outputs=cot, allow_unused=True)
        for p, g in zip(shared, trunk_grads, strict=True):
            p.grad = torch.zeros_like(p) if g is None else g.detach()
        for p, g in zip(heads, head_grads, strict=True):
            p.grad = None if g is None else g.detach()
        new_state = {**state, "aggregator": agg_state}
        logs: dict[str, Tensor] = {
            "objective": losses.detach().sum(),
            "weight": w.to(losses.device, losses.dtype),
        }
        if track:
            logs.update(_conflict_logs(gram.cpu(), tasks, new_state, losses))
        return logs, new_state


def _rep_rows(losses: Tensor, z: Tensor) -> Tensor:
    """``[k, numel(Z)]`` gradients of each loss w.r.t. ``Z`` (shared rows: ``k`` passes through
    the heads only, batched)."""
    k = losses.shape[0]
    eye = torch.eye(k, dtype=losses.dtype, device=losses.device)
    (g,) = torch.autograd.grad(
        losses, z, grad_outputs=eye, is_grads_batched=True, retain_graph=True
    )
    return g.reshape(k, -1)
