"""Shared pieces of the conditioning tests: tiny task specs, cases for every registered model.

(A module of its own, not conftest.py: test modules import from it, and a ``conftest``
module name would clash with the other test folders' conftest files.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from manytask.nn import CONDITIONING, build_conditioning, init_parameters


@dataclass(frozen=True)
class Task:
    """A stand-in with the fields of ``manytask.data.multitask.TaskSpec`` that nn reads."""

    name: str
    kind: str
    num_outputs: int
    description: str = ""
    metadata: tuple[float, ...] = ()


TASKS = (
    Task("letters", "multiclass", 3, "classify handwritten Greek letters", (24.0, 1.0)),
    Task("income", "binary", 1, "is the yearly income above 50K", (0.06, 0.0)),
    Task("wage", "regression", 2, "wage per hour and age", (1.0, 0.5)),
)
NUM_OUTPUTS = tuple(t.num_outputs for t in TASKS)

# (registry name, backbone, model arguments): every registered model at least once on each
# backbone, plus variants that move where the split between shared and specific falls.
MLP_ARGS = {"hidden": (8, 8, 8)}
CONV_ARGS = {"hidden": 4}
VECTOR = (5,)
IMAGE = (1, 16, 16)

CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("full_sharing", "mlp", {}),
    ("concat", "mlp", {"at": (0, 2, 3)}),
    ("concat", "mlp", {"at": (1,), "heads": "per_task"}),
    ("additive", "mlp", {}),
    ("multiplicative", "mlp", {"at": (0, 3)}),
    ("film", "mlp", {"heads": "per_task", "head_hidden": (4,)}),
    ("multi_head", "mlp", {"head_hidden": (4,)}),
    ("soft_ordering", "mlp", {}),
    ("soft_ordering", "mlp", {"encoder": "shared"}),
    ("mmoe", "mlp", {"num_experts": 3, "tower_hidden": (4,)}),
    ("cgc", "mlp", {"shared_experts": 2, "task_experts": 1}),
    ("ple", "mlp", {"levels": 2, "upper_width": 6}),
    ("ple", "mlp", {"levels": 3, "shared_experts": 1, "task_experts": 2}),
    ("cross_stitch", "mlp", {}),
    ("cross_stitch", "mlp", {"at": (1,), "granularity": "channel"}),
    ("gating", "mlp", {}),
] + [(name, "conv4", {}) for name in CONDITIONING]


def case_id(case: tuple[str, str, dict[str, Any]]) -> str:
    name, backbone, args = case
    extra = ",".join(f"{k}={v}" for k, v in args.items())
    return f"{name}-{backbone}" + (f"-{extra}" if extra else "")


def build_case(case: tuple[str, str, dict[str, Any]], seed: int = 0) -> torch.nn.Module:
    name, backbone, args = case
    model = build_conditioning(
        name,
        TASKS,
        VECTOR if backbone == "mlp" else IMAGE,
        backbone=backbone,
        backbone_args=MLP_ARGS if backbone == "mlp" else CONV_ARGS,
        **args,
    )
    return init_parameters(model, seed)


def inputs(case: tuple[str, str, dict[str, Any]], batch: int, seed: int) -> torch.Tensor:
    shape = VECTOR if case[1] == "mlp" else IMAGE
    return torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed))
