from __future__ import annotations

from pathlib import Path

import pytest
from runtime_engines import EngineBuilder


@pytest.fixture
def build(tmp_path: Path) -> EngineBuilder:
    """Builds ONNX models into real ONNX Runtime engines (artifacts under the test's tmp_path)."""
    return EngineBuilder(tmp_path)
