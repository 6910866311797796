"""A kiln server process for the shutdown test: the ``pair`` model on ONNX Runtime, each engine run
slowed to 400 ms, one request per run. Prints ``READY <http port> <grpc port>`` once listening;
exits 0 when SIGTERM/SIGINT drained every request in flight, 3 when some were cut off."""

from __future__ import annotations

import sys
from pathlib import Path

from server_models import EngineBuilder, pair_model

from kiln.runtime import BatchingConfig, FaultSpec, ModelConfig, Runtime
from kiln.server.config import ServerConfig
from kiln.server.serve import RunningServer, new_event_loop, serve


def main(work: Path) -> int:
    builder = EngineBuilder(work)
    runtime = Runtime()
    runtime.add_model("pair", ModelConfig(batching=BatchingConfig(max_batch_size=1, max_queue_delay_us=0)))
    engine = builder.factory(builder.build(pair_model(), max_batch_size=1))
    assert runtime.load_version("pair", "1", engine).result(60).state == "READY"
    runtime.model("pair").set_faults(FaultSpec(delay_ms=400))

    def started(server: RunningServer) -> None:
        print("READY", server.http_port, server.grpc_port, flush=True)

    async def run() -> bool:
        config = ServerConfig(host="127.0.0.1", http_port=0, grpc_port=0, drain_timeout_s=30)
        try:
            return await serve(runtime, config=config, on_started=started)
        finally:
            await runtime.aclose()

    drained = new_event_loop().run_until_complete(run())
    return 0 if drained else 3


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
