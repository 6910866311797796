"""``python -m kiln.cli.serve_engine --model PATH --name NAME --port PORT``: one engine served.

kiln's server (KServe v2 over HTTP on loopback) in front of one engine: an ONNX model built through
the engine cache, or an engine artifact folder. No repository, no gRPC, no metering: the smallest
process that serves a build the way ``kiln serve`` would. Benchmarks start it as a process of its
own (:class:`kiln.bench.peers.PeerSpec` kind ``kiln``), so the bench layer never imports the
server. Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kiln.bench.engines import obtain_bench_engine
from kiln.runtime import BatchingConfig, ModelConfig, Runtime
from kiln.server.config import ServerConfig
from kiln.server.serve import new_event_loop, serve


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m kiln.cli.serve_engine", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", type=Path, required=True, help="ONNX model, or an engine artifact folder")
    parser.add_argument("--name", required=True, help="the model's name on the server")
    parser.add_argument("--port", type=int, required=True, help="HTTP port on 127.0.0.1")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    parser.add_argument(
        "--no-dispatch-when-idle",
        dest="dispatch_when_idle",
        action="store_false",
        help="wait max_queue_delay_us for a fuller batch even when no batch is running",
    )
    parser.add_argument("--instances", type=int, default=1, help="execution instances running at once")
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        default=0,
        help="threads per engine run; 0: from the model's work, the CPUs split among the instances",
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="engine cache folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.instances < 1 or args.intra_op_threads < 0:
        raise SystemExit(
            f"--instances must be >= 1 and --intra-op-threads >= 0, seen {args.instances} and "
            f"{args.intra_op_threads}; e.g. --instances 2 --intra-op-threads 1"
        )
    loaded = obtain_bench_engine(
        args.model,
        cache_dir=args.cache_dir,
        intra_op_threads=args.intra_op_threads,
        num_instances=args.instances,
    )
    batching = BatchingConfig(
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        dispatch_when_idle=args.dispatch_when_idle,
    )

    async def run() -> None:
        runtime = Runtime()
        runtime.add_model(args.name, ModelConfig(num_instances=args.instances, batching=batching))
        try:
            await runtime.load_version(args.name, "1", loaded.engine).wait()
            await serve(runtime, None, ServerConfig(host="127.0.0.1", http_port=args.port, grpc_port=None))
        finally:
            await runtime.aclose()

    loop = new_event_loop()
    try:
        loop.run_until_complete(run())
    finally:
        loop.close()


if __name__ == "__main__":
    main()
