"""docs/meta-learning.md, the black-box sections: the Python examples run, the recipes exist."""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from manytask.recipes import list_recipes

DOC = (Path(__file__).resolve().parents[2] / "docs" / "meta-learning.md").read_text()
TRAIN = DOC.split("## Train and evaluate a black-box learner", 1)[1].split("\n## ", 1)[0]
OURS = (
    "".join(
        DOC.split(head, 1)[1].split("\n## ", 1)[0]
        for head in ("## The one interface", "## Feedforward + average (CNP)", "## SNAIL")
    )
    + TRAIN
)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Small models run fastest on one intra-op thread (and do not fight a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("block", re.findall(r"```python\n(.*?)```", TRAIN, flags=re.S))
def test_example_runs(block: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(block, "docs/meta-learning.md", "exec"), {})
    out = capsys.readouterr().out
    assert "(95% CI, 50 tasks)" in out or "(95% CI, 200 tasks)" in out


def test_named_recipes_exist() -> None:
    named = set(re.findall(r"(?:omniglot|sinusoid)/(?:cnp|snail)-[\w-]+", OURS))
    assert len(named) == 12 and named <= set(list_recipes())
