"""The update seam of multi-task training: one method object turns per-task losses into ``.grad``.

CS330's multi-task objective is ``min_theta sum_i w_i L_i(theta)``, and the lecture lists the
ways to go beyond fixed ``w_i``: weight the losses adaptively (uncertainty, GradNorm, DWA,
FAMO), combine the per-task gradients (MGDA, PCGrad, CAGrad, Nash-MTL, ...), or optimise the
worst task (min-max). Every one of them is an :class:`MTLMethod`, chosen in a recipe by name
with typed arguments::

    method: {name: fixed, args: {weights: {income: 1.0, age: 0.5}}}

**The contract** (optax-style: every piece of memory is explicit state, nothing is poked into a
method by the trainer)::

    method = MTL_METHODS.get(name)(**typed_args)        # hyper-parameters only; repr shows them
    state  = method.init(num_tasks)                     # -> State (may be {})
    for step in ...:
        losses = per_task_losses(...)                   # [k] with graph, tasks info.tasks
        optimizer.zero_grad(set_to_none=True)           # every .grad is None on entry
        logs, state = method.backward(losses, model, state, info)   # fills .grad
        # (the forward pass of `losses` runs inside method.forward_context(model, segments))
        optimizer.step()
        if method.needs_losses_after_step:              # e.g. FAMO
            state = method.after_step(new_losses, state, info)   # same batch, after the step

- ``losses``: ``[k]`` float tensor with its autograd graph, one entry per task of this step,
  in the order of ``info.tasks`` (``k`` may be smaller than the run's ``num_tasks`` when the
  run samples tasks). A method may differentiate it as often as it likes
  (``torch.autograd.grad(losses[i], params, retain_graph=True)``).
- ``model``: the multi-task model (:class:`SharedModel`): ``shared_parameters()`` is
  ``theta_sh``, ``task_parameters(i)`` is ``theta_i`` of the run's task ``i`` (the split is by
  reach: task ``j``'s loss gives ``theta_i`` zero gradient for ``j != i``).
- ``state``: what ``init`` returned, or the previous ``backward``'s new state. A *State* is a
  ``dict`` of tensors, Python numbers, strings and nested lists/dicts of them: what
  ``torch.save`` stores and ``torch.load(weights_only=True)`` reads back. It is indexed by the
  run's task index (``info.tasks`` maps step positions to it), lives on the losses' device,
  and is saved in every checkpoint as the part ``method`` (see :class:`MethodState`), so a
  resumed run continues with it exactly.
- On return, ``.grad`` of every parameter that should move holds the update direction (the
  optimiser then steps on it; parameters left with ``.grad = None`` are not moved by Adam or
  SGD). ``backward`` returns ``(logs, new_state)``: ``logs`` maps names to detached scalar
  tensors or to ``[k]`` tensors (one value per task of the step, e.g. the weights used); the
  trainer averages them into the metrics log (a ``[k]`` entry ``weight`` appears as
  ``weight/<task name>``). The key ``objective`` is the value of the combined objective
  (``sum_i w_i L_i`` for fixed weights, ``max_i L_i`` for min-max) and is logged as the
  training ``loss``.
- Randomness: a stochastic method (PCGrad's random task order) draws from a
  ``torch.Generator`` whose state it keeps in ``state`` (``generator.get_state()``), never from
  the global RNG.

**Adding a method** is one file in ``src/manytask/mtl/`` (or its sub-packages) and one line
``MTL_METHODS.add("name", "manytask.mtl.file:Class")`` in :mod:`manytask.registry`. Its
constructor takes typed keyword hyper-parameters (``Literal[...]`` for string options) that a
recipe's ``method.args`` are checked against when the config is loaded; it validates them at
once and ``repr`` shows them. Constructor parameters named in :data:`INJECTED` are filled by
the run, not the recipe (a method that wants the task names takes ``task_names``). The
contract battery in ``tests/mtl/test_method_battery.py`` runs over every registered method.

Two kinds of method fit the base classes here:

- a **loss weighting** (:class:`LossWeighting`) only says the weights ``w [k]`` of this step
  (from the detached losses and its state); the base class back-propagates
  ``sum_i w_i L_i`` once;
- anything else (gradient aggregators, min-max) subclasses :class:`MTLMethod` and writes
  ``backward`` itself, e.g. per-task gradients of ``theta_sh`` -> an aggregated direction ->
  ``.grad``, plus each task's own gradient for its ``theta_i``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = [
    "INJECTED",
    "LossWeighting",
    "MTLMethod",
    "MethodState",
    "SharedModel",
    "State",
    "StepInfo",
    "check_losses",
    "state_to",
]

State = dict[str, Any]
"""A method's memory: tensors, numbers, strings and nested dicts/lists of them."""

INJECTED: tuple[str, ...] = ("task_names", "task_weights")
"""Constructor parameters the run fills in (never set in a recipe): the run's task names in
task-index order, and the weights ``w_i`` of the task specs."""


@runtime_checkable
class SharedModel(Protocol):
    """What a method may ask of the model: every parameter, ``theta_sh`` and ``theta_i``."""

    def parameters(self) -> Iterator[nn.Parameter]: ...
    def shared_parameters(self) -> Iterator[nn.Parameter]: ...
    def task_parameters(self, task: int) -> Iterator[nn.Parameter]: ...


@dataclass(frozen=True)
class StepInfo:
    """Where a training step stands.

    Attributes:
        tasks: ``[k]`` int64, the run's index of the task of each entry of ``losses``.
        num_tasks: the run's number of tasks ``K`` (``k <= K``).
        step: the number of steps completed before this one (0 at the first step).
    """

    tasks: Tensor
    num_tasks: int
    step: int = 0

    @classmethod
    def all_tasks(cls, num_tasks: int, step: int = 0, device: Any = None) -> StepInfo:
        """Every task, in index order (a step that does not sample tasks)."""
        return cls(torch.arange(num_tasks, device=device), num_tasks, step)


def check_losses(losses: Tensor, info: StepInfo, owner: str) -> None:
    """Raise a clear error unless ``losses`` is a ``[k]`` float tensor matching ``info``."""
    if not isinstance(losses, Tensor) or losses.dim() != 1 or not losses.is_floating_point():
        found = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
        raise ValueError(f"{owner}: losses must be a float tensor [k] (one per task); got {found}")
    if losses.shape[0] != info.tasks.shape[0]:
        raise ValueError(
            f"{owner}: {losses.shape[0]} losses but info.tasks names {info.tasks.shape[0]} tasks; "
            "give one loss per task of the step, in the order of info.tasks"
        )
    if losses.shape[0] == 0:
        raise ValueError(f"{owner}: no losses (a step needs at least one task)")


class MTLMethod:
    """Base class of every multi-task update method (see the module docstring for the contract).

    Subclasses set ``name``, take typed hyper-parameters in ``__init__``, and implement
    :meth:`backward` (and :meth:`init` if they have memory).
    """

    name: ClassVar[str] = "method"
    needs_losses_after_step: ClassVar[bool] = False
    """True for methods that read the losses of the same batch after the optimiser step."""

    def init(self, num_tasks: int) -> State:
        """The initial state for a run of ``num_tasks`` tasks (default: no memory)."""
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"{self.name}: num_tasks must be a positive int; got {num_tasks!r}")
        return {}

    def backward(
        self, losses: Tensor, model: SharedModel, state: State, info: StepInfo
    ) -> tuple[dict[str, Tensor], State]:
        """Fill ``.grad`` of ``model``'s parameters from ``losses`` ``[k]``; return logs, state."""
        raise NotImplementedError

    def after_step(self, losses: Tensor, state: State, info: StepInfo) -> State:
        """Update the state from the losses ``[k]`` (no graph) of the same batch after the
        optimiser step; called only when :attr:`needs_losses_after_step` is set."""
        return state

    def forward_context(
        self, model: Any, segments: Sequence[int] | None
    ) -> contextlib.AbstractContextManager[Any]:
        """A context the trainer runs the step's forward pass in (default: nothing).

        Gradient methods capture the shared layers' inputs there, so that :meth:`backward` gets
        every task's gradient from one backward pass (:class:`manytask.mtl.jacobian.
        TaskCapture`). ``segments``: the rows of each task's mini-batch in the concatenated
        batch, in the order of the losses; ``None`` when the tasks share their inputs.
        """
        return contextlib.nullcontext()

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments that define the method (shown by ``repr``)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


class LossWeighting(MTLMethod):
    """A method that weights the losses: ``backward`` is one pass of ``sum_i w_i L_i``.

    Subclasses implement :meth:`weights`, which sees the *detached* losses and returns the
    weights ``[k]`` of this step's tasks (and the new state). The weights are constants for
    autograd: the gradient is ``sum_i w_i grad L_i``.
    """

    def weights(self, losses: Tensor, state: State, info: StepInfo) -> tuple[Tensor, State]:
        """``[k]`` weights for the detached ``losses`` ``[k]``, and the new state."""
        raise NotImplementedError

    def backward(
        self, losses: Tensor, model: SharedModel, state: State, info: StepInfo
    ) -> tuple[dict[str, Tensor], State]:
        check_losses(losses, info, self.name)
        w, state = self.weights(losses.detach(), state, info)
        if w.shape != losses.shape:
            raise ValueError(
                f"{self.name}: weights() returned shape {tuple(w.shape)}, expected "
                f"{tuple(losses.shape)} (one weight per task of the step)"
            )
        w = w.detach().to(losses)
        objective = (w * losses).sum()
        objective.backward()
        return {"objective": objective.detach(), "weight": w}, state


def state_to(state: Any, device: torch.device | str | None) -> Any:
    """``state`` with every tensor moved to ``device`` (containers copied, scalars kept)."""
    if isinstance(state, Tensor):
        return state.to(device)
    if isinstance(state, Mapping):
        return {k: state_to(v, device) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(state_to(v, device) for v in state)
    return state


class MethodState:
    """A method with its current state: the stateful part ``method`` of a run's checkpoint.

    It keeps the state between steps and saves it with the method's ``repr``, so a checkpoint
    of a method with other hyper-parameters is refused instead of silently continued.

    Args:
        method: the method.
        num_tasks: the run's number of tasks.
        device: where the state's tensors live (the model's device).

    Example:
        >>> from manytask.mtl.fixed import FixedWeights
        >>> model = torch.nn.Linear(2, 1)
        >>> model.shared_parameters = model.parameters
        >>> part = MethodState(FixedWeights([1.0, 3.0]), num_tasks=2)
        >>> losses = torch.stack([model(torch.ones(1, 2)).sum(), model(torch.zeros(1, 2)).sum()])
        >>> logs = part.backward(losses, model, StepInfo.all_tasks(2))
        >>> torch.allclose(logs["objective"], losses.detach() @ torch.tensor([1.0, 3.0]))
        True
    """

    def __init__(
        self, method: MTLMethod, num_tasks: int, device: torch.device | str | None = None
    ) -> None:
        self.method = method
        self.num_tasks = num_tasks
        self.device = device
        self.state: State = state_to(method.init(num_tasks), device)

    def __repr__(self) -> str:
        return f"MethodState({self.method!r}, num_tasks={self.num_tasks})"

    def backward(self, losses: Tensor, model: SharedModel, info: StepInfo) -> dict[str, Tensor]:
        """Run the method's ``backward`` and keep its new state; returns its logs."""
        logs, self.state = self.method.backward(losses, model, self.state, info)
        return logs

    def after_step(self, losses: Tensor, info: StepInfo) -> None:
        """Run the method's ``after_step`` (if it needs one) and keep the new state."""
        if self.method.needs_losses_after_step:
            self.state = self.method.after_step(losses.detach(), self.state, info)

    def state_dict(self) -> dict[str, Any]:
        return {
            "method": repr(self.method),
            "num_tasks": self.num_tasks,
            "state": state_to(self.state, "cpu"),
        }

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        if saved.get("method") != repr(self.method) or saved.get("num_tasks") != self.num_tasks:
            raise ValueError(
                f"the checkpoint's method state was saved by {saved.get('method')} with "
                f"{saved.get('num_tasks')} tasks, but this run uses {self.method!r} with "
                f"{self.num_tasks} tasks; resume with the run's own config"
            )
        self.state = state_to(dict(saved["state"]), self.device)


def check_weight_vector(
    owner: str, weights: Sequence[float], num_tasks: int, *, allow_zero: bool = True
) -> list[float]:
    """Validate ``num_tasks`` finite weights ``>= 0`` (``> 0`` unless ``allow_zero``), not all 0."""
    out = [float(w) for w in weights]
    if len(out) != num_tasks:
        raise ValueError(f"{owner}: {len(out)} weights for {num_tasks} tasks; give one per task")
    bad = [w for w in out if not math.isfinite(w) or w < 0 or (w == 0 and not allow_zero)]
    if bad:
        raise ValueError(f"{owner}: weights must be finite and >= 0; got {bad[0]!r}")
    if not any(w > 0 for w in out):
        raise ValueError(f"{owner}: at least one weight must be > 0; got {out}")
    return out
