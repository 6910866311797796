"""Serve real ONNX Runtime engines from the engine cache, meter every request, and scrape
``/metrics`` over a real socket; then read the same usage back from the ledger with ``kiln usage``."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from metering_engines import Engines, rows
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Mount
from typer.testing import CliRunner

from kiln.cli.main import app as cli
from kiln.errors import InvalidInput, KilnError
from kiln.metering import EfficiencyTable, Metering, UsageEvent, UsageLedger
from kiln.runtime import BatchingConfig, InferResult, ModelConfig, Runtime, VersionPolicy
from kiln.server.metrics import ServerMetrics, create_metrics_app

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, /, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def device_seconds(result: InferResult, request_rows: int) -> float:
    """The request's share of its batch's compute time, as the server computes it."""
    return result.compute_ns / 1e9 * request_rows / result.batch_rows


class Served:
    """Sends requests and meters each answer the way the server does."""

    def __init__(self, runtime: Runtime, meter: Metering) -> None:
        self.runtime, self.meter = runtime, meter
        self.device_s: dict[str, float] = {}
        self.rows = 0

    async def send(self, n: int, tenant: str, seed: int) -> None:
        async def one(i: int) -> None:
            count = 1 + i % 3
            result = await self.runtime.infer("ctr", rows(count, seed=seed + i))
            share = device_seconds(result, count)
            self.meter.record(UsageEvent(time.time(), tenant, "ctr", result.version, count, share))
            self.device_s[result.version] = self.device_s.get(result.version, 0.0) + share
            self.rows += count

        await asyncio.gather(*(one(i) for i in range(n)))


async def scrape_over_a_socket(metrics: ServerMetrics) -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Mount("/metrics", create_metrics_app(metrics))]), log_level="warning"
        )
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(1000):
            if server.started:
                break
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/metrics/")
        assert response.status_code == 200
        return response.text
    finally:
        server.should_exit = True
        await task
        sock.close()


def test_scrape_after_serving_swapping_and_metering(tmp_path: Path) -> None:
    engines = Engines(tmp_path)
    ledger_path = tmp_path / "usage.db"
    efficiency = EfficiencyTable()
    meter = Metering(UsageLedger(ledger_path), efficiency_of=efficiency)
    runtime = Runtime()
    runtime.add_model(
        "ctr",
        ModelConfig(
            num_instances=2,
            batching=BatchingConfig(max_batch_size=8, max_queue_delay_us=500),
            versions=VersionPolicy(max_loaded_versions=2),
        ),
    )
    metrics = ServerMetrics(runtime, usage=meter, gpu=None)
    served = Served(runtime, meter)

    async def main() -> str:
        for version, constant, factor in (("1", 1.0, None), ("2", 2.0, 2.0)):
            started = time.perf_counter()
            obtained = engines.obtain(constant)
            metrics.builds.observe_build("ctr", obtained.report.path, obtained.report.build_seconds)
            assert obtained.report.artifact.manifest.efficiency_factor is None  # not benchmarked yet
            efficiency.set("ctr", version, factor)  # what `kiln bench` would have measured for v2
            status = await runtime.load_version("ctr", version, obtained.engine).wait(timeout_s=60)
            assert status.state == "READY", status.reason
            metrics.builds.observe_load("ctr", time.perf_counter() - started)
            await served.send(
                40 if version == "1" else 20, tenant="acme" if version == "1" else "globex", seed=0
            )
        again = engines.obtain(1.0)  # version 1's engine is still in the cache
        metrics.builds.observe_build("ctr", again.report.path, again.report.build_seconds)
        again.engine.close()
        with pytest.raises(InvalidInput):
            await runtime.infer("ctr", {"x": rows(1)["x"][:, :3]})
        with pytest.raises(KilnError):
            await runtime.infer("ctr", rows(1), version="9")
        text = await scrape_over_a_socket(metrics)
        await runtime.aclose()
        return text

    s = parse(asyncio.run(main()))

    # requests by outcome, per model and per resident version
    assert sample(s, "kiln_requests_total", model="ctr", outcome="success") == 60
    assert sample(s, "kiln_requests_total", model="ctr", outcome="invalid_input") == 1
    assert sum(v for k, v in s.items() if k[0] == "kiln_requests_total") == 62
    assert sample(s, "kiln_version_requests_total", model="ctr", version="1", outcome="success") == 40
    assert sample(s, "kiln_version_requests_total", model="ctr", version="2", outcome="success") == 20
    # throughput and latency histograms agree with what was sent
    assert sample(s, "kiln_inferences_total", model="ctr") == served.rows
    assert sample(s, "kiln_batch_size_rows_sum", model="ctr") == served.rows
    runs = sample(s, "kiln_executions_total", model="ctr")
    assert sample(s, "kiln_batch_size_rows_count", model="ctr") == runs
    assert 0 < runs <= 60
    for name in (
        "kiln_request_duration_seconds",
        "kiln_queue_duration_seconds",
        "kiln_compute_duration_seconds",
    ):
        assert sample(s, f"{name}_count", model="ctr") == 60
        assert sample(s, f"{name}_bucket", model="ctr", le="+Inf") == 60
    assert sample(s, "kiln_request_duration_seconds_sum", model="ctr") > sample(
        s, "kiln_compute_duration_seconds_sum", model="ctr"
    )
    # versions: one swap, both resident and READY, version 2 active, memory adds up
    assert sample(s, "kiln_swaps_total", model="ctr") == 1
    assert sample(s, "kiln_version_state", model="ctr", version="1", state="READY") == 1
    assert sample(s, "kiln_version_state", model="ctr", version="2", state="READY") == 1
    assert sample(s, "kiln_version_active", model="ctr", version="2") == 1
    assert sample(s, "kiln_version_active", model="ctr", version="1") == 0
    memory = sample(s, "kiln_model_memory_bytes", model="ctr")
    assert memory == sum(sample(s, "kiln_version_memory_bytes", model="ctr", version=v) for v in "12")
    assert sample(s, "kiln_queue_depth", model="ctr") == 0
    assert sample(s, "kiln_model_ready", model="ctr") == 1
    # engine cache and loads, from the real cache's build reports
    assert sample(s, "kiln_engine_cache_lookups_total", model="ctr", result="hit") == 1
    assert sum(v for k, v in s.items() if k[0] == "kiln_engine_cache_lookups_total") == 3
    assert sample(s, "kiln_model_load_duration_seconds_count", model="ctr") == 2
    # metered usage: EPU = device-seconds x factor (1.0 unmeasured, 2.0 for version 2)
    assert sample(s, "kiln_metered_requests_total", tenant="acme", model="ctr") == 40
    assert sample(s, "kiln_metered_requests_total", tenant="globex", model="ctr") == 20
    acme_ds = sample(s, "kiln_metered_device_seconds_total", tenant="acme", model="ctr")
    globex_ds = sample(s, "kiln_metered_device_seconds_total", tenant="globex", model="ctr")
    assert acme_ds == pytest.approx(served.device_s["1"])
    assert globex_ds == pytest.approx(served.device_s["2"])
    assert sample(s, "kiln_metered_epu_total", tenant="acme", model="ctr") == pytest.approx(acme_ds)
    assert sample(s, "kiln_metered_epu_total", tenant="globex", model="ctr") == pytest.approx(2 * globex_ds)
    assert {"process_cpu_seconds_total", "python_info"} <= {k[0] for k in s}

    # the ledger holds the same usage once flushed, and `kiln usage` reports it
    meter.close()
    result = CliRunner().invoke(cli, ["usage", "--ledger", str(ledger_path), "--json", "--by", "version"])
    assert result.exit_code == 0, result.output
    report = {row["version"]: row for row in json.loads(result.output)["rows"]}
    assert report["ctr/1"]["requests"] == 40
    assert report["ctr/2"]["epu"] == pytest.approx(2 * globex_ds)
    assert json.loads(result.output)["total"]["items"] == served.rows
