"""All workers' metrics in one scrape: the merge (pure) and the Unix sockets between workers (real)."""

from __future__ import annotations

import asyncio
import gzip
import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kiln.server.metrics import ServerMetrics
from kiln.server.metrics_workers import (
    all_workers_text,
    create_workers_metrics_app,
    merge_expositions,
    read_peer_metrics,
    serve_own_metrics,
    socket_path,
)


def _worker_text(worker: str, requests: float) -> str:
    registry = CollectorRegistry()
    Counter("kiln_requests", "Requests.", ["worker"], registry=registry).labels(worker).inc(requests)
    Gauge("kiln_queue_depth", "Queued.", ["worker"], registry=registry).labels(worker).set(2)
    return generate_latest(registry).decode()


def _types(text: str) -> list[str]:
    return re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE)


def _values(text: str, name: str) -> dict[str, float]:
    return {
        sample.labels["worker"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def test_merge_keeps_one_block_per_family_with_every_workers_samples() -> None:
    merged = merge_expositions([_worker_text("0", 3), _worker_text("1", 5)])

    assert len(_types(merged)) == len(set(_types(merged))) == 3  # requests, created, queue depth
    assert _values(merged, "kiln_requests_total") == {"0": 3.0, "1": 5.0}
    assert _values(merged, "kiln_queue_depth") == {"0": 2.0, "1": 2.0}
    first = merged.splitlines()
    assert first[0].startswith("# HELP kiln_requests_total")
    assert first[2].endswith(" 3.0")
    assert 'worker="0"' in first[2]


def test_merge_of_nothing_is_empty_and_a_family_only_one_worker_has_is_kept() -> None:
    assert merge_expositions([]) == ""
    only_one = '# HELP extra_total X.\n# TYPE extra_total counter\nextra_total{worker="1"} 1.0\n'

    merged = merge_expositions([_worker_text("0", 1), only_one])

    assert _values(merged, "extra_total") == {"1": 1.0}


def test_a_worker_reads_the_others_over_their_sockets_and_counts_the_missing(tmp_path: Path) -> None:
    async def scenario() -> str:
        peer = await serve_own_metrics(socket_path(tmp_path, 1), lambda: _worker_text("1", 7))
        try:
            assert await read_peer_metrics(socket_path(tmp_path, 2), timeout_s=1) is None  # absent
            return await all_workers_text(tmp_path, 0, 3, lambda: _worker_text("0", 4))
        finally:
            peer.close()
            await peer.wait_closed()

    merged = asyncio.run(scenario())

    assert _values(merged, "kiln_requests_total") == {"0": 4.0, "1": 7.0}
    assert _values(merged, "kiln_metrics_workers_missing") == {"0": 1.0}  # worker 2 never started


def test_a_stale_socket_file_of_a_dead_worker_is_replaced(tmp_path: Path) -> None:
    stale = socket_path(tmp_path, 0)
    stale.write_text("left behind")

    async def scenario() -> str | None:
        server = await serve_own_metrics(stale, lambda: _worker_text("0", 1))
        try:
            return await read_peer_metrics(stale)
        finally:
            server.close()
            await server.wait_closed()

    text = asyncio.run(scenario())

    assert text is not None
    assert _values(text, "kiln_requests_total") == {"0": 1.0}


def test_the_app_answers_with_all_workers_and_gzip_when_asked(tmp_path: Path) -> None:
    own = ServerMetrics(gpu=None, worker="0")
    app = create_workers_metrics_app(tmp_path, 0, 2, own.text)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def scenario() -> None:
        peer = await serve_own_metrics(socket_path(tmp_path, 1), ServerMetrics(gpu=None, worker="1").text)
        try:
            scope = {"type": "http", "headers": [(b"accept-encoding", b"gzip")]}
            await app(scope, receive, send)
        finally:
            peer.close()
            await peer.wait_closed()

    asyncio.run(scenario())

    start, body = sent
    headers = dict(start["headers"])
    assert start["status"] == 200
    assert headers[b"content-encoding"] == b"gzip"
    text = gzip.decompress(body["body"]).decode()
    assert set(re.findall(r'worker="(\d+)"', text)) == {"0", "1"}
    assert _values(text, "kiln_metrics_workers_missing") == {"0": 0.0}
    assert len(_types(text)) == len(set(_types(text)))
