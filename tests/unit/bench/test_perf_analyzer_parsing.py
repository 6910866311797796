from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kiln.bench.inputs import RequestPool
from kiln.bench.perf_analyzer import parse_perf_csv, perf_analyzer_command, write_input_data
from kiln.errors import ConfigError

CSV = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
    "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency\n"
    """8,1482.98,66,2590,2293,63,348,13,0,4839,7787,9980,12520
1,227.049,123,1478,2402,5,354,13,0,3762,5468,6719,9535
"""
)


def test_csv_rows_sorted_by_concurrency_in_milliseconds() -> None:
    rows = parse_perf_csv(CSV)
    assert [r.concurrency for r in rows] == [1, 8]
    assert rows[1].throughput_per_s == pytest.approx(1482.98)
    assert rows[1].p99_ms == pytest.approx(12.52)
    assert rows[0].p50_ms == pytest.approx(3.762)


def test_csv_without_a_latency_column_is_refused() -> None:
    with pytest.raises(ConfigError, match="lacks a column"):
        parse_perf_csv("Concurrency,Inferences/Second\n1,100\n")


def test_command_names_model_address_range_and_csv(tmp_path: Path) -> None:
    command = perf_analyzer_command(
        Path("/bin/pa"), "127.0.0.1:9000", "ctr", concurrency=(1, 16, 15),
        input_data=tmp_path / "in.json", csv_path=tmp_path / "out.csv",
    )  # fmt: skip
    assert command[:5] == ["/bin/pa", "-m", "ctr", "-u", "127.0.0.1:9000"]
    assert command[command.index("--concurrency-range") + 1] == "1:16:15"
    assert command[command.index("-f") + 1] == str(tmp_path / "out.csv")
    with pytest.raises(ConfigError, match="concurrency range"):
        perf_analyzer_command(
            Path("pa"), "h:1", "m", concurrency=(4, 1, 1), input_data=tmp_path, csv_path=tmp_path
        )


def test_input_data_drops_the_batch_axis(tmp_path: Path) -> None:
    pool = RequestPool(({"x": np.arange(6, dtype=np.float32).reshape(1, 2, 3)},))
    data = json.loads(write_input_data(pool, tmp_path / "in.json").read_text())
    assert data == {"data": [{"x": {"content": [0, 1, 2, 3, 4, 5], "shape": [2, 3]}}]}
