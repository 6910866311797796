from __future__ import annotations

from pathlib import Path

import pytest

from kiln.errors import ConfigError
from kiln.gate.config import GateConfig, GateLoad, GateThresholds


@pytest.mark.parametrize(
    "thresholds",
    [
        {"max_p99_ms": 0.0},
        {"max_p99_ms": -1.0},
        {"min_speedup": float("nan")},
        {"max_accuracy_drop": -0.1},
        {"max_build_s": float("inf")},
    ],
)
def test_thresholds_a_gate_cannot_use_are_refused(thresholds: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=r"threshold|must be > 0"):
        GateThresholds(**thresholds)


def test_load_is_checked() -> None:
    with pytest.raises(ConfigError, match="--load-rate"):
        GateLoad(load_rate_per_s=0)
    with pytest.raises(ConfigError, match="--concurrency"):
        GateLoad(concurrency=(0,))


def test_config_checks_the_model_and_what_publishing_and_served_need(tmp_path: Path) -> None:
    model = tmp_path / "ctr.onnx"
    with pytest.raises(ConfigError, match="not a file"):
        GateConfig(model)
    model.write_bytes(b"x")
    assert GateConfig(model).model_name == "ctr"
    with pytest.raises(ConfigError, match="--max-drop-vs-served needs the served model"):
        GateConfig(model, thresholds=GateThresholds(max_drop_vs_served=0.01))
    with pytest.raises(ConfigError, match="unknown --precision"):
        GateConfig(model, precision="int4")  # type: ignore[arg-type]
    config = GateConfig(model, thresholds=GateThresholds(max_p99_ms=7.0))
    assert config.speedup_bound_ms == 7.0
