"""The layers point one way: stack <- splice <- apps <- tools. No module imports from a
layer above its own, at the top or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Each layer and the layers above it, which it may not import.
ABOVE = {
    "stack": ("splice", "apps", "tools"),
    "splice": ("apps", "tools"),
    "apps": ("tools",),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import statement in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append((node.lineno, node.module))
    return out


def upward_imports(layer: str) -> list[str]:
    """``file:line module`` for each import of ``layer`` that reaches above it."""
    bad = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for line, module in imported_modules(path):
            if module.split(".")[0] in ABOVE[layer]:
                bad.append(f"{path.relative_to(ROOT)}:{line} {module}")
    return bad


@pytest.mark.parametrize("layer", sorted(ABOVE))
def test_no_layer_imports_a_layer_above_it(layer: str):
    assert upward_imports(layer) == []


def test_the_check_sees_imports_inside_functions(tmp_path: Path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from splice.aio import SpliceApi\n    import tools.lab\n")
    assert imported_modules(f) == [(2, "splice.aio"), (3, "tools.lab")]
