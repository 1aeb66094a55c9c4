"""``manytask.nn`` stays below the training stack: it imports no meta, mtl, train, config or CLI
module (DESIGN.md section 2)."""

import ast
from pathlib import Path

import manytask.nn

FORBIDDEN = ("manytask.meta", "manytask.mtl", "manytask.train", "manytask.config", "manytask.cli")


def test_nn_imports_nothing_above_it() -> None:
    root = Path(manytask.nn.__file__).parent
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
