"""Shared fixtures. Tests mirror ``src/``: ``tests/unit`` (fast, CPU, fakes of the real interfaces),
``tests/integration`` (real engines, real servers on loopback, real clients), ``tests/gpu``."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        parts = Path(str(item.fspath)).relative_to(root).parts
        if parts and parts[0] == "integration":
            item.add_marker(pytest.mark.integration)
        if parts and parts[0] == "gpu":
            item.add_marker(pytest.mark.gpu)
