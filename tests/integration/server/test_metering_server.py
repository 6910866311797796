"""Every served request reaches the meter once, with the tenant its API key names."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from server_harness import Factories, Served, free_config, start_served

from kiln.metering.usage import UsageEvent
from kiln.server.auth import Authenticator

ACME = "acme-key-0123456789abcdef"
GLOBEX = "globex-key-0123456789abcd"


class RecordingMeter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[UsageEvent] = []

    def record(self, event: UsageEvent) -> None:
        with self.lock:
            self.events.append(event)


@pytest.fixture(scope="module")
def metered(factories: Factories) -> Iterator[tuple[Served, RecordingMeter]]:
    meter = RecordingMeter()
    running = start_served(factories, free_config(), Authenticator({ACME: "acme", GLOBEX: "globex"}), meter)
    yield running, meter
    running.server.stop()


def test_usage_events_carry_tenant_model_version_rows_and_device_time(
    metered: tuple[Served, RecordingMeter],
) -> None:
    served, meter = metered
    tensors = [httpclient.InferInput(name, [3, 4], "FP32") for name in ("a", "b")]
    for tensor in tensors:
        tensor.set_data_from_numpy(np.ones((3, 4), np.float32))
    httpclient.InferenceServerClient(served.http).infer("pair", tensors, headers={"x-api-key": ACME})

    grpc_tensors = [grpcclient.InferInput(name, [1, 4], "FP32") for name in ("a", "b")]
    for tensor in grpc_tensors:
        tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
    client = grpcclient.InferenceServerClient(served.grpc)
    client.infer("pair", grpc_tensors, headers={"x-api-key": GLOBEX})
    with pytest.raises(Exception, match="missing input"):
        client.infer("pair", grpc_tensors[:1], headers={"x-api-key": GLOBEX})

    assert [(e.tenant, e.model, e.version, e.items) for e in meter.events] == [
        ("acme", "pair", "1", 3),
        ("globex", "pair", "1", 1),
    ]
    assert all(0 < e.device_seconds < 1 for e in meter.events)
