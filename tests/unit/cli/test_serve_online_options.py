"""``kiln serve --feedback``'s gate options: out-of-range values are refused, naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kiln.cli.main import app
from kiln.cli.serve import online_config
from kiln.errors import ConfigError


def test_gate_options_in_range_make_the_config() -> None:
    config = online_config(0.02, 1000, 50)
    assert (config.max_auc_drop, config.holdout_size, config.min_holdout) == (0.02, 1000, 50)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ((1.5, 2000, 200), "--max-auc-drop"),
        ((0.01, 0, 0), "--holdout-size"),
        ((0.01, 100, 200), "--min-holdout"),
    ],
)
def test_out_of_range_gate_options_are_refused(args: tuple[float, int, int], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        online_config(*args)


def test_feedback_with_several_workers_is_refused_before_anything_starts(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["serve", str(tmp_path), "--workers", "2", "--feedback", str(tmp_path / "fb.db")]
    )
    assert result.exit_code == 2
    assert "--feedback" in result.output
    assert "--workers 1" in result.output
    assert not (tmp_path / "fb.db").exists()
