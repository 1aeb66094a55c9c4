"""docs/meta-learning.md, the optimisation-based section: its example runs, its recipes exist."""

import re
from pathlib import Path

import pytest

from manytask.recipes import list_recipes

DOC = (Path(__file__).resolve().parents[2] / "docs" / "meta-learning.md").read_text()
OURS = DOC.split("## Optimisation-based learners", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("block", re.findall(r"```python\n(.*?)```", OURS, flags=re.S))
def test_example_runs(block: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(block, "docs/meta-learning.md", "exec"), {})
    assert "torch.Size([4, 75])" in capsys.readouterr().out


def test_named_recipes_exist() -> None:
    named = set(
        re.findall(r"(?:omniglot|sinusoid)/(?:maml|metasgd|anil|fomaml|reptile)-[\w-]+", OURS)
    )
    assert len(named) >= 8 and named <= set(list_recipes())
    for learner in ("fomaml", "metasgd", "anil", "reptile"):
        for shape in ("5w1s", "5w5s", "20w1s", "20w5s"):
            assert f"omniglot/{learner}-{shape}" in list_recipes()
