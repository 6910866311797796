"""Tiny example models and samples for end-to-end build tests, generated once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from build_helpers import Example, generate_example

from kiln.examples import EXAMPLES


@pytest.fixture(scope="session")
def examples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Example]:
    root = tmp_path_factory.mktemp("examples")
    return {name: generate_example(root, name) for name in EXAMPLES}


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "engines"
