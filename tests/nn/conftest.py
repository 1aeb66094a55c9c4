"""Fixtures of the conditioning tests (the shared cases live in ``conditioning_cases.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from conditioning_cases import CASES, case_id


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """These models are tiny: one intra-op thread is faster than two fighting over a loaded
    CPU (measured 10x here); restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=CASES, ids=[case_id(c) for c in CASES])
def case(request: pytest.FixtureRequest) -> tuple[str, str, dict[str, Any]]:
    return request.param  # type: ignore[no-any-return]
