"""docs/meta-learning.md, section MANN: its Python examples run, its recipes exist."""

import re
from pathlib import Path

import pytest

from manytask.recipes import list_recipes

DOC = (Path(__file__).resolve().parents[2] / "docs" / "meta-learning.md").read_text()
SECTION = DOC.split("## MANN", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("block", re.findall(r"```python\n(.*?)```", SECTION, flags=re.S))
def test_example_runs(block: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(block, "docs/meta-learning.md", "exec"), {})
    out = capsys.readouterr().out
    assert "2-way 1-shot:" in out or "instance_10" in out


def test_named_recipes_exist() -> None:
    named = set(re.findall(r"(?:omniglot|santoro|sinusoid)/mann-[\w-]+|santoro/lstm", SECTION))
    assert named and named <= set(list_recipes()) | {"omniglot/mann-"}
    for n, k in ((2, 1), (3, 1), (4, 1), (5, 1), (2, 2)):
        assert f"omniglot/mann-{n}w{k}s" in list_recipes()
