"""Fixtures shared by the meta-learning tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch


def _graph_names(t: torch.Tensor) -> set[str]:
    """The class names of every autograd node behind ``t`` (which operations built it)."""
    seen, stack, names = set(), [t.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(n for n, _ in node.next_functions)
    return names


@pytest.fixture
def graph_names() -> Callable[[torch.Tensor], set[str]]:
    return _graph_names
