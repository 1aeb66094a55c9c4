"""``manytask.mtl`` never imports the training stack, the config, the CLI or meta-learning."""

import ast
from pathlib import Path

import manytask.mtl

FORBIDDEN = ("manytask.meta", "manytask.train", "manytask.config", "manytask.cli")


def test_mtl_imports_nothing_above_it() -> None:
    root = Path(manytask.mtl.__file__).parent
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert not name.startswith(FORBIDDEN), f"{path.name} imports {name}"
