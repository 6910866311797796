"""Runs the ```python blocks of README.md and docs/*.md, so documented examples cannot rot.

Blocks of one page run in order in one namespace, in a fresh temporary working directory.
Fence a block as ```text or ```console (or ```python no-run) when it must not run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


@pytest.mark.parametrize("page", [p for p in PAGES if p.exists() and _blocks(p)], ids=lambda p: p.name)
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        for number, code in enumerate(_blocks(page), start=1):
            compiled = compile(code, f"{page.name}[block {number}]", "exec")
            exec(compiled, namespace)
    finally:
        os.chdir(cwd)
