"""``python -m kiln.bench.peers.serve KIND --model PATH --name NAME --port PORT``: one peer server.

The process a :class:`~kiln.bench.peers.process.PeerProcess` starts for the servers kiln is
compared with, so that every server under test runs in a process of its own, apart from the load
generator. KIND is ``fastapi-ort``, ``litserve`` or ``unoptimized``; each imports its stack (the
``peers`` extra) only in its own branch. kiln's own server is started as ``python -m
kiln.cli.serve_engine`` instead: the bench layer does not import the server.
"""

from __future__ import annotations

import argparse
from pathlib import Path


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
    parser.add_argument("kind", choices=("fastapi-ort", "litserve", "unoptimized"))
    parser.add_argument("--model", type=Path, required=True, help="ONNX model")
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    args = parser.parse_args(argv)
    if args.kind == "litserve":
        _litserve(args)
    else:
        _fastapi(args, optimized=args.kind == "fastapi-ort")


if __name__ == "__main__":
    main()
