"""The contract every registered multi-task method keeps (see manytask.mtl.base).

A new method registered in MTL_METHODS is run through this battery with no test of its own:
built from its defaults (run-injected arguments filled in), it turns per-task losses into
finite ``.grad`` on exactly the parameters the losses reach, deterministically, with a state
that survives a weights-only checkpoint round trip, and a ``repr`` that shows it.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from manytask.mtl import MethodState, MTLMethod, StepInfo
from manytask.registry import MTL_METHODS

NAMES = ("a", "b", "c")


class TwoHeads(nn.Module):
    """A shared layer and one head per task: theta_sh and theta_i as the seam describes."""

    def __init__(self, num_tasks: int = 3) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.trunk = nn.Linear(4, 5)
        self.heads = nn.ModuleList(nn.Linear(5, 1) for _ in range(num_tasks))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def shared_parameters(self):
        return self.trunk.parameters()

    def task_parameters(self, task: int):
        return self.heads[task].parameters()

    def losses(self, tasks: list[int]) -> torch.Tensor:
        g = torch.Generator().manual_seed(1)
        x = torch.randn(8, 4, generator=g)
        h = torch.relu(self.trunk(x))
        return torch.stack([(self.heads[t](h) - t).pow(2).mean() * (t + 1) for t in tasks])


def build(name: str) -> MTLMethod:
    injected = {"task_names": NAMES, "task_weights": (1.0, 1.0, 1.0)}
    args = {k: v for k, v in injected.items() if MTL_METHODS.takes(name, k)}
    return MTL_METHODS.get(name)(**args)


def step(method: MTLMethod, model: TwoHeads, tasks: list[int], state):
    model.zero_grad(set_to_none=True)
    info = StepInfo(torch.tensor(tasks), len(NAMES), 0)
    losses = model.losses(tasks)
    logs, state = method.backward(losses, model, state, info)
    if method.needs_losses_after_step:
        with torch.no_grad():
            state = method.after_step(model.losses(tasks), state, info)
    return logs, state


@pytest.mark.parametrize("name", MTL_METHODS.names())
def test_method_contract(name):
    method = build(name)
    assert isinstance(method, MTLMethod)
    assert type(method).__name__ in repr(method)
    assert method.name == name
    model = TwoHeads()
    state = method.init(len(NAMES))
    logs, state = step(method, model, [2, 0], state)
    # .grad: finite where the step's losses reach, None on the head of the task left out.
    for p in model.shared_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    for t in (0, 2):
        for p in model.task_parameters(t):
            assert p.grad is not None and torch.isfinite(p.grad).all()
    assert all(p.grad is None for p in model.task_parameters(1))
    # Logs: detached scalars or one value per task of the step; the objective is among them.
    assert "objective" in logs
    for key, value in logs.items():
        assert not value.requires_grad, key
        assert value.dim() == 0 or value.shape == (2,), key
        assert torch.isfinite(value).all(), key
    # The state survives a weights-only checkpoint, and the same inputs give the same grads.
    part = MethodState(build(name), len(NAMES))
    part.state = state
    buf = io.BytesIO()
    torch.save(part.state_dict(), buf)
    buf.seek(0)
    again = MethodState(build(name), len(NAMES))
    again.load_state_dict(torch.load(buf, weights_only=True))
    grads = [p.grad.clone() for p in model.shared_parameters()]
    model2 = TwoHeads()
    step(build(name), model2, [2, 0], build(name).init(len(NAMES)))
    for g, p in zip(grads, model2.shared_parameters(), strict=True):
        assert torch.equal(g, p.grad)


@pytest.mark.parametrize("name", MTL_METHODS.names())
def test_method_state_refuses_other_hyperparameters(name):
    part = MethodState(build(name), len(NAMES))
    saved = part.state_dict()
    saved["method"] = "Other(x=1)"
    with pytest.raises(ValueError, match="resume with the run's own config"):
        MethodState(build(name), len(NAMES)).load_state_dict(saved)


def test_unknown_method_names_the_closest():
    from manytask.typed import ConfigError

    with pytest.raises(ConfigError, match="Did you mean 'minmax'"):
        MTL_METHODS.get("minmx")
