"""The protocol-facing parts of the KServe target that need no server."""

from __future__ import annotations

import pytest

from kiln.bench.kserve import parse_counters, parse_inputs, split_url, status_kind
from kiln.bench.results import ServerCounters, ServerSplit
from kiln.errors import ConfigError
from kiln.types import TensorSpec


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000"),
        ("127.0.0.1:8001/", "127.0.0.1:8001"),
        ("grpc://h:1", "h:1"),
    ],
)
def test_split_url(url: str, want: str) -> None:
    assert split_url(url, "http") == want


def test_split_url_refuses() -> None:
    with pytest.raises(ConfigError, match="bad server address"):
        split_url("http://h:1/v2/models", "http")
    with pytest.raises(ConfigError, match="unknown protocol"):
        split_url("h:1", "ftp")


def test_parse_inputs() -> None:
    meta = {"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": ["-1", "4"]}]}
    assert parse_inputs(meta) == (TensorSpec("x", "FP32", (-1, 4)),)
    with pytest.raises(ConfigError, match="unknown datatype"):
        parse_inputs({"inputs": [{"name": "x", "datatype": "FLOAT", "shape": [1]}]})
    with pytest.raises(ConfigError, match="no inputs"):
        parse_inputs({"inputs": []})


def test_parse_counters_sums_versions_and_reads_int64_strings() -> None:
    stats = {
        "model_stats": [
            {
                "name": "m",
                "version": "1",
                "inference_stats": {
                    "success": {"count": "10", "ns": "5000"},
                    "fail": {"count": 1, "ns": 1},
                    "queue": {"count": 10, "ns": 1000},
                    "compute_input": {"count": 10, "ns": 100},
                    "compute_infer": {"count": 10, "ns": 2000},
                    "compute_output": {"count": 10, "ns": 100},
                },
            },
            {"name": "m", "version": "2", "inference_stats": {"success": {"count": 5, "ns": 1}}},
        ]
    }
    counters = parse_counters(stats)
    assert counters == ServerCounters(15, 1, 1000, 2200)
    split = ServerSplit.from_counters(counters.minus(ServerCounters(5, 0, 0, 200)))
    assert split is not None
    assert split.queue_mean_ms == pytest.approx(1000 / 10 / 1e6)
    assert split.compute_mean_ms == pytest.approx(2000 / 10 / 1e6)


class _Error(Exception):
    def __init__(self, status: str | None) -> None:
        super().__init__("boom")
        self._status = status

    def status(self) -> str | None:
        return self._status


def test_status_kind() -> None:
    assert status_kind(_Error("503"), "http") == "HTTP 503"
    assert status_kind(_Error("StatusCode.UNAVAILABLE"), "grpc") == "gRPC UNAVAILABLE"
    assert status_kind(_Error(None), "http") == "_Error"
    assert status_kind(ValueError("x"), "grpc") == "ValueError"
