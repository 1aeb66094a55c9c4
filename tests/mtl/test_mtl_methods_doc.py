"""docs/mtl-methods.md: its examples run, and its table names every method registered by
issue 9."""

import re
from pathlib import Path

import pytest

from manytask.registry import MTL_METHODS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "mtl-methods.md").read_text()


@pytest.mark.parametrize("block", re.findall(r"```python\n(.*?)```", DOC, flags=re.S))
def test_examples_run(block: str) -> None:
    exec(compile(block, "docs/mtl-methods.md", "exec"), {})


def test_the_table_lists_every_registered_method() -> None:
    for name in MTL_METHODS.names():
        assert f"`{name}`" in DOC, name
