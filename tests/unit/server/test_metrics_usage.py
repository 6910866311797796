"""Metered usage on /metrics, the ASGI app and the process families."""

from __future__ import annotations

import asyncio

import httpx
from metrics_scrape import names, parse, value

from kiln.metering.meter import Metering
from kiln.metering.usage import UsageEvent
from kiln.server.metrics import ServerMetrics, create_metrics_app, metrics_text


def metering() -> Metering:
    meter = Metering(efficiency_of=lambda model, version: 2.0)
    meter.record(UsageEvent(1.8e9, "acme", "ctr", "1", 4, 0.25))
    meter.record(UsageEvent(1.8e9, "acme", "ctr", "2", 2, 0.25))
    meter.record(UsageEvent(1.8e9, "globex", "cnn", "1", 1, 1.0))
    meter.record(UsageEvent(1.8e9, "globex", "cnn", "1", -1, 1.0))  # dropped
    return meter


def test_metered_usage_per_tenant_and_model() -> None:
    s = parse(metrics_text(ServerMetrics(usage=metering(), gpu=None, process=False)))
    assert value(s, "kiln_metered_requests_total", tenant="acme", model="ctr") == 2
    assert value(s, "kiln_metered_items_total", tenant="acme", model="ctr") == 6
    assert value(s, "kiln_metered_device_seconds_total", tenant="acme", model="ctr") == 0.5
    assert value(s, "kiln_metered_epu_total", tenant="acme", model="ctr") == 1.0
    assert value(s, "kiln_metered_epu_total", tenant="globex", model="cnn") == 2.0
    assert value(s, "kiln_metering_rejected_events_total", reason="invalid") == 1


def test_the_asgi_app_serves_the_same_text_and_gzips_on_request() -> None:
    metrics = ServerMetrics(usage=metering(), gpu=None, process=True)
    app = create_metrics_app(metrics)

    async def get(headers: dict[str, str]) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kiln") as client:
            return await client.get("/metrics", headers=headers)

    plain = asyncio.run(get({"Accept-Encoding": "identity"}))
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/plain")
    s = parse(plain.text)
    assert value(s, "kiln_metered_requests_total", tenant="acme", model="ctr") == 2
    assert {"process_cpu_seconds_total", "python_info"} <= names(s)
    zipped = asyncio.run(get({"Accept-Encoding": "gzip"}))
    assert zipped.headers.get("content-encoding") == "gzip"
    assert "kiln_metered_epu_total" in zipped.text  # httpx decodes it
