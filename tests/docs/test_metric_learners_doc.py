"""docs/meta-learning.md, section "Metric-based learners": its example runs, its table is true."""

import re
from pathlib import Path

import pytest

from manytask.registry import LEARNERS

TEXT = (Path(__file__).resolve().parents[2] / "docs" / "meta-learning.md").read_text()
SECTION = TEXT.split("## Metric-based learners", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("block", re.findall(r"```python\n(.*?)```", SECTION, flags=re.S))
def test_example_runs(block: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(block, "docs/meta-learning.md", "exec"), {})
    out = capsys.readouterr().out
    assert "torch.Size([2, 15, 5]) True" in out and "(64, 5, 5)" in out


@pytest.mark.parametrize("name", ["protonet", "matchingnet", "relationnet"])
def test_table_names_the_registered_learners(name: str) -> None:
    cls = LEARNERS.get(name)
    row = next(line for line in SECTION.splitlines() if f"| `{name}` |" in line)
    assert row.startswith(f"| `{cls.__name__}`")
    assert ("yes" in row) is cls.order_invariant
