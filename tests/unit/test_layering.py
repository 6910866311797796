"""Imports go down the layers (``cli -> server | pipeline | bench -> runtime | ...``): the layers
named here never import the ones above them, not even inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kiln

SOURCE = Path(kiln.__file__).parent

FORBIDDEN = {
    "bench": ("kiln.server", "kiln.cli", "kiln.pipeline"),
    "runtime": ("kiln.server", "kiln.cli", "kiln.bench", "kiln.pipeline"),
    "server": ("kiln.cli", "kiln.bench", "kiln.pipeline"),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def offending_imports(layer: str) -> list[str]:
    banned = FORBIDDEN[layer]
    problems = []
    for path in sorted((SOURCE / layer).rglob("*.py")):
        for line, module in imported_modules(path):
            if any(module == b or module.startswith(b + ".") for b in banned):
                problems.append(f"{path.relative_to(SOURCE)}:{line} imports {module}")
    return problems


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_never_imports_the_layers_above_it(layer: str) -> None:
    assert offending_imports(layer) == []


def test_the_scan_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from kiln.server.serve import serve\n    import kiln.cli\n")
    assert imported_modules(module) == [(2, "kiln.server.serve"), (3, "kiln.cli")]
