"""perf_analyzer (Triton's load generator, unmodified) against kiln over HTTP and gRPC.

It reads server metadata, model metadata, configuration and statistics before and after each
measurement window, then drives inference; it exits 0 only when all of that worked. ``make
install`` puts it in the virtualenv; where it could not be installed, its wrapper exits 127 with
the reason and these tests are skipped.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from server_harness import Served

PERF_ANALYZER = Path(sys.executable).parent / "perf_analyzer"


@pytest.fixture(scope="module")
def perf_analyzer() -> Path:
    if not PERF_ANALYZER.exists():
        pytest.skip(f"perf_analyzer is not installed at {PERF_ANALYZER}; run `make install`")
    probe = subprocess.run(
        [PERF_ANALYZER, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    if probe.returncode == 127:
        pytest.skip(probe.stderr.strip() or "perf_analyzer is not installed")
    return PERF_ANALYZER


@pytest.mark.parametrize(("protocol", "tensors"), [("http", "binary"), ("http", "json"), ("grpc", "binary")])
def test_perf_analyzer_measures_kiln(
    perf_analyzer: Path, served: Served, protocol: str, tensors: str
) -> None:
    url = served.http if protocol == "http" else served.grpc
    command = [
        str(perf_analyzer), "-m", "ctr", "-i", protocol, "-u", url,
        "--concurrency-range", "4", "-p", "500", "--input-data", "zero",
        "--input-tensor-format", tensors, "--output-tensor-format", tensors,
        "--stability-percentage", "1000", "-r", "4",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Throughput:" in output
    assert "Server:" in output
    assert "infer/sec" in output
