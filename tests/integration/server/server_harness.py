"""The server under test: a real kiln server (its HTTP protocol and grpc.aio on free loopback ports)
in front of a real runtime of ONNX Runtime engines, started on a thread of its own.

Models served: ``ctr`` (tiny example, batches up to 16) and ``pair`` (two inputs, two outputs).
``spare`` (the pair graph) is known to the repository stand-in but not loaded: tests load it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from server_models import RuntimeControl

from kiln.compile.backends.base import Engine
from kiln.metering.usage import Meter
from kiln.runtime import BatchingConfig, ModelConfig, Runtime
from kiln.server.auth import Authenticator
from kiln.server.config import ServerConfig
from kiln.server.serve import BackgroundServer


@dataclass(frozen=True)
class Factories:
    ctr: Callable[[], Engine]
    pair: Callable[[], Engine]


@dataclass
class Served:
    server: BackgroundServer
    runtime: Runtime
    control: RuntimeControl

    @property
    def http(self) -> str:
        return self.server.http_url

    @property
    def grpc(self) -> str:
        url = self.server.grpc_url
        assert url is not None
        return url


def free_config(**values: object) -> ServerConfig:
    """A server config on free loopback ports."""
    return ServerConfig.model_validate({"host": "127.0.0.1", "http_port": 0, "grpc_port": 0, **values})


def start_served(
    factories: Factories, config: ServerConfig, auth: Authenticator | None = None, meter: Meter | None = None
) -> Served:
    runtime = Runtime()
    runtime.add_model("ctr", ModelConfig(batching=BatchingConfig(max_batch_size=16, max_queue_delay_us=500)))
    for name in ("pair", "spare"):
        runtime.add_model(name, ModelConfig(batching=BatchingConfig(max_batch_size=8, max_queue_delay_us=0)))
    control = RuntimeControl(runtime, {"ctr": factories.ctr, "pair": factories.pair, "spare": factories.pair})
    for name in ("ctr", "pair"):
        control.load(name)
        assert control.handles[name].result(60).state == "READY"
    server = BackgroundServer(runtime, control, config, auth=auth, meter=meter, close_runtime=True).start()
    return Served(server, runtime, control)
