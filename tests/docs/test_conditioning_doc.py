"""docs/conditioning.md: its example runs, and its table names every registered model."""

import re
from pathlib import Path

import pytest

from manytask.nn import CONDITIONING

DOC = (Path(__file__).resolve().parents[2] / "docs" / "conditioning.md").read_text()


@pytest.mark.parametrize("block", re.findall(r"```python\n(.*?)```", DOC, flags=re.S))
def test_example_runs(block: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(block, "docs/conditioning.md", "exec"), {})
    out = capsys.readouterr().out
    assert "film: shared" in out and "multi_head: shared" in out


def test_tables_list_every_registered_model() -> None:
    for name in CONDITIONING:
        assert f"| `{name}` |" in DOC, name
        cls = CONDITIONING[name].__name__
        assert f"`{cls}`" in DOC, cls
