"""KServeTarget against a minimal KServe v2 server over real HTTP and gRPC sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from kserve_stub import Counters, free_port, grpc_stub, http_stub

from kiln.bench import ClosedLoop, KServeTarget, OpenLoop, RequestPool, StepResult, run_closed, run_open
from kiln.errors import ConfigError, ModelNotFound
from kiln.types import TensorSpec


@pytest.fixture(params=["http", "grpc"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, Counters]]:
    stub = http_stub if request.param == "http" else grpc_stub
    with stub() as (url, counters):
        yield request.param, url, counters


async def _closed(target: KServeTarget) -> StepResult:
    specs = await target.open()
    try:
        pool = RequestPool.random(specs, batch_size=2, count=4)
        return await run_closed(target, pool, ClosedLoop(2, duration_s=0.3, warmup_s=0.05))
    finally:
        await target.aclose()


def test_a_closed_loop_against_a_server(server: tuple[str, str, Counters]) -> None:
    protocol, url, counters = server
    target = KServeTarget(url, "add", protocol=protocol)  # type: ignore[arg-type]
    result = asyncio.run(_closed(target))
    assert result.ok > 0
    assert result.failed == 0
    assert counters.success >= result.ok
    assert result.split is not None
    assert result.split.source == "server-stats"
    assert result.split.queue_mean_ms == pytest.approx(1000 / 1e6)  # the stub books 1 µs of queue each


def test_the_model_signature_comes_from_the_server(server: tuple[str, str, Counters]) -> None:
    protocol, url, _ = server
    target = KServeTarget(url, "add", protocol=protocol)  # type: ignore[arg-type]

    async def open_close() -> tuple[TensorSpec, ...]:
        specs = await target.open()
        await target.aclose()
        return specs

    assert asyncio.run(open_close()) == (TensorSpec("x", "FP32", (-1, 4)),)


def test_an_unknown_model_names_what_the_server_serves(server: tuple[str, str, Counters]) -> None:
    protocol, url, _ = server
    target = KServeTarget(url, "nope", protocol=protocol)  # type: ignore[arg-type]
    with pytest.raises(ModelNotFound, match=r"does not serve model 'nope'.*it serves: add, broken"):
        asyncio.run(target.open())


def test_errors_are_counted_by_protocol_status(server: tuple[str, str, Counters]) -> None:
    protocol, url, counters = server
    target = KServeTarget(url, "broken", protocol=protocol)  # type: ignore[arg-type]

    async def run() -> StepResult:
        specs = await target.open()
        try:
            return await run_open(
                target, RequestPool.random(specs), OpenLoop(100.0, duration_s=0.2, warmup_s=0.0)
            )
        finally:
            await target.aclose()

    result = asyncio.run(run())
    assert result.ok == 0
    assert result.failed == counters.fail > 0
    assert list(result.errors) == (["HTTP 500"] if protocol == "http" else ["gRPC INTERNAL"])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_no_server_is_a_clear_error(protocol: str) -> None:
    target = KServeTarget(f"127.0.0.1:{free_port()}", "add", protocol=protocol)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=f"no KServe v2 server answers at .* over {protocol}"):
        asyncio.run(target.open())
