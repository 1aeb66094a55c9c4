"""The README's code must run as printed (teach-by-diff snippet and quick-start claims)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_the_loop_snippet():
    assert any("EpisodeSampler" in b for b in _python_blocks())


@pytest.mark.parametrize("block", _python_blocks())
def test_readme_python_runs(block, monkeypatch, capsys):
    monkeypatch.delenv("MANYTASK_DATA", raising=False)  # the embedded data must suffice
    exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "95% CI" in out


def test_quick_start_commands_exist():
    cmds = re.findall(r"^bash (scripts/\S+)", README, flags=re.M)
    assert cmds[:2] == ["scripts/main.sh", "scripts/test.sh"]
    for c in cmds:
        assert (ROOT / c).is_file()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci


def test_every_recipe_in_the_readme_is_shipped():
    from manytask.recipes import list_recipes

    named = set(re.findall(r"`(omniglot/[a-z0-9-]+)`", README))
    assert named and named <= set(list_recipes())
