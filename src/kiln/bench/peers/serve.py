"""``python -m kiln.bench.peers.serve KIND --model PATH --name NAME --port PORT``: one server.

The process a :class:`~kiln.bench.peers.process.PeerProcess` starts, so that every server under
test runs in a process of its own, apart from the load generator. KIND is one of
:data:`~kiln.bench.peers.process.PEER_KINDS`. The server stack is imported only in the branch that
needs it (``kiln`` needs ``kiln.server``; the others the ``peers`` extra).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _kiln(args: argparse.Namespace) -> None:
    from kiln.bench.engines import obtain_bench_engine  # noqa: PLC0415
    from kiln.runtime import BatchingConfig, ModelConfig, Runtime  # noqa: PLC0415
    from kiln.server.config import ServerConfig  # noqa: PLC0415
    from kiln.server.serve import new_event_loop, serve  # noqa: PLC0415

    loaded = obtain_bench_engine(args.model, cache_dir=args.cache_dir)
    batching = BatchingConfig(
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        dispatch_when_idle=args.dispatch_when_idle,
    )

    async def main() -> None:
        runtime = Runtime()
        runtime.add_model(args.name, ModelConfig(num_instances=args.instances, batching=batching))
        try:
            await runtime.load_version(args.name, "1", loaded.engine).wait()
            config = ServerConfig(host="127.0.0.1", http_port=args.port, grpc_port=None)
            await serve(runtime, None, config)
        finally:
            await runtime.aclose()

    loop = new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def _fastapi(args: argparse.Namespace, *, optimized: bool) -> None:
    import uvicorn  # noqa: PLC0415

    from kiln.bench.peers.fastapi_ort import create_fastapi_app  # noqa: PLC0415
    from kiln.bench.peers.ort import UNOPTIMIZED_THREADS  # noqa: PLC0415

    threads = 0 if optimized else UNOPTIMIZED_THREADS
    app = create_fastapi_app(
        args.model, args.name, optimized=optimized, serialize=not optimized, intra_op_threads=threads
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


def _litserve(args: argparse.Namespace) -> None:
    from kiln.bench.peers.litserve_ort import run_litserve  # noqa: PLC0415

    run_litserve(
        args.model,
        args.name,
        port=args.port,
        max_batch_size=args.max_batch_size,
        batch_timeout_s=args.max_queue_delay_us / 1e6,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kiln.bench.peers.serve")
    parser.add_argument("kind", choices=("kiln", "fastapi-ort", "litserve", "unoptimized"))
    parser.add_argument("--model", type=Path, required=True, help="ONNX model (kiln: or an artifact folder)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--no-dispatch-when-idle", dest="dispatch_when_idle", action="store_false")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.kind == "kiln":
        _kiln(args)
    elif args.kind == "litserve":
        _litserve(args)
    else:
        _fastapi(args, optimized=args.kind == "fastapi-ort")


if __name__ == "__main__":
    main()
