from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kiln.cli.main import app
from kiln.errors import ConfigError
from kiln.server.config import server_config
from kiln.server.metrics import ServerMetrics
from kiln.server.workers import check_workers_supported, describe_exit

runner = CliRunner()


def test_more_than_one_worker_needs_linux() -> None:
    with pytest.raises(ConfigError, match=r"--workers 2 needs Linux.*platform darwin.*--workers 1"):
        check_workers_supported(2, platform="darwin")
    check_workers_supported(1, platform="darwin")
    check_workers_supported(4, platform="linux")


def test_workers_are_bounded() -> None:
    assert server_config(workers=8).workers == 8
    with pytest.raises(ConfigError, match="workers"):
        server_config(workers=0)
    with pytest.raises(ConfigError, match="workers"):
        server_config(workers=65)


def test_workers_check_the_repository_before_starting_any(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", str(tmp_path / "nope"), "--workers", "2"])
    assert result.exit_code == 2
    assert "not a folder" in result.output
    assert "started" not in result.output


def test_exits_are_described_by_code_or_signal() -> None:
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"


def test_a_worker_labels_every_sample_with_its_index() -> None:
    text = ServerMetrics(gpu=None, worker="3").text()
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert samples
    assert all(re.search(r'worker="3"', line) for line in samples), samples
    assert 'worker="' not in ServerMetrics(gpu=None).text()
