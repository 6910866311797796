"""kiln's server as ``benchmarks/server.py`` runs it: one model built through the engine cache with
ONNX Runtime (one intra-op thread), served over KServe v2 HTTP and gRPC until SIGTERM.

    python benchmarks/_kiln_server.py MODEL.onnx --http-port 8000 --grpc-port 8001 \
        --max-batch-size 16 --max-queue-delay-us 0 --instances 1

Metering is on (a SQLite ledger in ``--ledger``, as ``kiln serve`` keeps one) unless ``--no-meter``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from kiln.bench.engines import obtain_bench_engine
from kiln.metering.meter import Metering
from kiln.runtime import BatchingConfig, ModelConfig, Runtime
from kiln.server.config import ServerConfig
from kiln.server.serve import new_event_loop, serve


def _meter(path: Path | None) -> Metering | None:
    return None if path is None else Metering.open(path)


async def _main(args: argparse.Namespace) -> None:
    cache = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="kiln-bench-cache-"))
    engine = obtain_bench_engine(Path(args.model), cache_dir=cache, intra_op_threads=1).engine
    runtime = Runtime()
    batching = BatchingConfig(
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        preferred_batch_sizes=tuple(args.preferred),
    )
    slot = runtime.add_model(args.name, ModelConfig(batching=batching, num_instances=args.instances))
    handle = slot.load_version("1", engine)
    await handle.wait()
    if handle.state != "READY":
        raise SystemExit(f"the model did not load: {handle.state} {handle.reason}")
    config = ServerConfig(host="127.0.0.1", http_port=args.http_port, grpc_port=args.grpc_port)
    meter = _meter(Path(args.ledger) if args.ledger and not args.no_meter else None)
    try:
        await serve(runtime, config=config, meter=meter)
    finally:
        await runtime.aclose()
        if meter is not None:
            meter.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="ONNX model file")
    parser.add_argument("--name", default="ctr")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-queue-delay-us", type=int, default=0)
    parser.add_argument("--preferred", type=int, nargs="*", default=[])
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--cache", default="", help="engine cache folder (default: a new temporary one)")
    parser.add_argument("--ledger", default="", help="metering ledger file (default: no metering)")
    parser.add_argument("--no-meter", action="store_true")
    args = parser.parse_args()
    loop = new_event_loop()
    try:
        loop.run_until_complete(_main(args))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
