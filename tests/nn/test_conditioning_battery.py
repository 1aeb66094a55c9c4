"""The contract battery, run over every registered conditioning model (and variants).

Each test takes one ``case`` (see ``conftest.CASES``: every name in ``CONDITIONING`` on the
MLP and on Conv4, plus variants) and checks the shared multi-task model contract.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from conditioning_cases import CASES, NUM_OUTPUTS, TASKS, build_case, inputs
from torch import nn

from manytask.nn import CONDITIONING, MultiTaskModel

_STANDARD = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.LayerNorm,
    nn.Embedding,
)

Case = tuple[str, str, dict[str, Any]]


def test_every_registered_model_is_in_the_battery() -> None:
    assert {name for name, _, _ in CASES} == set(CONDITIONING)
    assert {name for name, backbone, _ in CASES if backbone == "conv4"} == set(CONDITIONING)


def test_shapes_for_every_task(case: Case) -> None:
    model = build_case(case)
    x = inputs(case, 4, 1)
    for t, n in enumerate(NUM_OUTPUTS):
        y = model(x, t)
        assert y.shape == (4, n)
        assert torch.isfinite(y).all()
    assert model(x, torch.tensor(2)).shape == (4, NUM_OUTPUTS[2])  # 0-d int tensor


def test_parameter_accounting_adds_up(case: Case) -> None:
    model = build_case(case)
    everything = {id(p): p for p in model.parameters()}
    shared = [id(p) for p in model.shared_parameters()]
    per_task = [[id(p) for p in model.task_parameters(t)] for t in range(len(TASKS))]
    groups = [shared, *per_task]
    flat = [i for g in groups for i in g]
    assert len(flat) == len(set(flat)), "a parameter is in two groups"
    assert set(flat) == set(everything), "the groups are not exactly parameters()"
    counts = model.parameter_counts()
    assert counts["shared"] == sum(everything[i].numel() for i in shared)
    assert counts["per_task"] == [sum(everything[i].numel() for i in g) for g in per_task]
    total = sum(p.numel() for p in model.parameters())
    assert counts["shared"] + sum(counts["per_task"]) == total
    # shared_parameters() keeps the order of parameters()
    order = [id(p) for p in model.parameters() if id(p) in set(shared)]
    assert shared == order


def test_gradients_reach_exactly_the_declared_parameters(case: Case) -> None:
    model = build_case(case)
    model.train()
    x = inputs(case, 6, 2)
    specific = [list(model.task_parameters(t)) for t in range(len(TASKS))]
    shared = list(model.shared_parameters())
    for t in range(len(TASKS)):
        model.zero_grad(set_to_none=True)
        y = model(x, t)
        weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(t))
        (y * weights).sum().backward()
        for j, params in enumerate(specific):
            for p in params:
                if j == t:
                    assert p.grad is not None and p.grad.abs().sum() > 0, (
                        f"task {t} gives no gradient to one of its own parameters {p.shape}"
                    )
                else:
                    assert p.grad is None or not p.grad.any(), (
                        f"task {t}'s loss reaches task {j}'s parameter {p.shape}"
                    )
        for p in shared:
            assert p.grad is not None and p.grad.abs().sum() > 0, (
                f"task {t} gives no gradient to a shared parameter {p.shape}"
            )


def test_same_seed_same_model_and_outputs(case: Case) -> None:
    torch.manual_seed(1)  # the constructors draw from the global RNG; init_parameters must not
    a = build_case(case, seed=7)
    torch.manual_seed(2)
    b = build_case(case, seed=7)
    c = build_case(case, seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    x = inputs(case, 3, 3)
    for t in range(len(TASKS)):
        assert torch.equal(a(x, t), b(x, t))


def test_own_parameter_tables_take_a_generator(case: Case) -> None:
    """Modules owning parameters directly (not a standard torch layer) re-draw them with
    ``reset_parameters(generator=...)`` (what ``manytask.nn.init_parameters`` calls)."""
    model = build_case(case)
    for m in model.modules():
        if isinstance(m, _STANDARD) or not any(True for _ in m.parameters(recurse=False)):
            continue
        reset = getattr(m, "reset_parameters", None)
        assert reset is not None, f"{type(m).__name__} owns parameters without reset_parameters"
        assert "generator" in inspect.signature(reset).parameters
        reset(generator=torch.Generator().manual_seed(0))


def test_repr_shows_the_hyperparameters(case: Case) -> None:
    args = case[2]
    model = build_case(case)
    text = repr(model)
    assert type(model).__name__ in text
    assert f"num_outputs={NUM_OUTPUTS}" in text
    for key, value in args.items():
        assert f"{key}=" in text, f"{key} is not shown in repr"
        if isinstance(value, str):
            assert repr(value) in text


@pytest.mark.parametrize("layout", ["separate", "shared_input", "repeated_tasks"])
def test_forward_tasks_equals_per_task_calls(case: Case, layout: str) -> None:
    model = build_case(case).eval()  # batch norm on running statistics: batch-independent
    if layout == "separate":
        xs = [inputs(case, n, 10 + n) for n in (2, 3, 4)]
        tasks = [0, 1, 2]
    elif layout == "shared_input":
        x = inputs(case, 3, 11)
        xs, tasks = [x, x, x], [0, 1, 2]
    else:
        xs = [inputs(case, 2, 12), inputs(case, 3, 13), inputs(case, 1, 14)]
        tasks = [2, 0, 2]
    with torch.no_grad():
        together = model.forward_tasks(xs, tasks)
        alone = [model(x, t) for x, t in zip(xs, tasks, strict=True)]
    assert len(together) == len(alone)
    for a, b in zip(together, alone, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_descriptor_batch_matches_int_tasks(case: Case) -> None:
    model = build_case(case).eval()
    x = inputs(case, 6, 4)
    rows = torch.tensor([0, 1, 2, 2, 1, 0])
    if not model.reads_descriptors:
        with pytest.raises(ValueError, match="task as an int"):
            model(x, torch.eye(len(TASKS))[rows])
        return
    if getattr(model, "head_mode", "shared") != "shared":
        with pytest.raises(ValueError, match="heads='shared'"):
            model(x, model.descriptors[rows])
        return
    z = model.descriptors[rows] if hasattr(model, "descriptors") else torch.eye(len(TASKS))[rows]
    with torch.no_grad():
        y = model(x, z)
        assert y.shape == (6, max(NUM_OUTPUTS))
        for b, t in enumerate(rows.tolist()):
            torch.testing.assert_close(
                y[b, : NUM_OUTPUTS[t]], model(x[b : b + 1], t)[0], rtol=1e-5, atol=1e-6
            )


def test_bad_calls_fail_clearly(case: Case) -> None:
    model: MultiTaskModel = build_case(case)  # type: ignore[assignment]
    x = inputs(case, 2, 5)
    with pytest.raises(ValueError, match=r"task must be an int in \[0, 3\)"):
        model(x, 3)
    with pytest.raises(ValueError, match="task must be an int"):
        model(x, True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expects x of shape"):
        model(x[:, None], 0)
    with pytest.raises(ValueError, match="one task per mini-batch"):
        model.forward_tasks([x, x], [0])


def test_task_index_tensor_serves_mixed_rows(case: Case) -> None:
    model = build_case(case).eval()
    x = inputs(case, 5, 6)
    task = torch.tensor([2, 0, 2, 1, 0])
    with torch.no_grad():
        y = model(x, task)
        assert y.shape == (5, max(NUM_OUTPUTS))
        for b, t in enumerate(task.tolist()):
            n = NUM_OUTPUTS[t]
            torch.testing.assert_close(y[b, :n], model(x[b : b + 1], t)[0], rtol=1e-5, atol=1e-6)
            assert not y[b, n:].any()
    with pytest.raises(ValueError, match=r"task indices must be in \[0, 3\)"):
        model(x, torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match="must be \\[B\\] integers"):
        model(x, torch.tensor([0, 1]))
