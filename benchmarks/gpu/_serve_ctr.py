"""Serve the CTR example model on the kiln torch engine over KServe v2 (HTTP and gRPC) until SIGTERM.

The e2e stage starts this in a process of its own, as ``kiln serve`` would run: it builds the
engine through kiln's torch backend (fp32, one CUDA graph per bucket), puts it in a
:class:`kiln.runtime.Runtime` with dynamic batching and ``--instances`` execution instances, and
serves it with :func:`kiln.server.serve.serve` (uvloop, grpc.aio). When the model is READY it
writes ``--ready-file`` (JSON: ports, build seconds, the model configuration).

    PYTHONPATH=src python benchmarks/gpu/_serve_ctr.py --work DIR --http-port P --grpc-port Q \
        --ready-file F [--size full] [--buckets 1,64,256,1024] [--max-batch 1024] [--instances 2] \
        [--queue-delay-us 200]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from kiln.compile.artifact import write_manifest
from kiln.compile.backends.base import EngineArtifact
from kiln.compile.backends.torch import TorchBackend
from kiln.compile.spec import BuildSpec
from kiln.examples import build_model
from kiln.model.load import load_model
from kiln.runtime import BatchingConfig, ModelConfig, Runtime, VersionPolicy
from kiln.runtime.lifecycle import VersionState
from kiln.server.config import ServerConfig
from kiln.server.serve import RunningServer, new_event_loop, serve


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--size", default="full")
    parser.add_argument("--buckets", default="1,64,256,1024")
    parser.add_argument("--max-batch", type=int, default=1024)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--queue-delay-us", type=int, default=200)
    return parser.parse_args()


def build(args: argparse.Namespace, backend: TorchBackend) -> tuple[EngineArtifact, float]:
    folder = args.work / "engine"
    source = load_model(
        build_model("ctr", args.work / "ctr.onnx", size=args.size), op_support=backend.op_support()
    )
    spec = BuildSpec(
        precision="fp32",
        max_batch_size=args.max_batch,
        backend="torch",
        backend_options=(("buckets", args.buckets),),
    )
    started = time.perf_counter()
    output = backend.build(source, spec, folder)
    seconds = time.perf_counter() - started
    artifact = write_manifest(
        folder,
        key="bench-e2e-ctr",
        source=source,
        spec=spec,
        target=backend.target(),
        output=output,
        build_seconds=seconds,
    )
    return artifact, seconds


def model_config(args: argparse.Namespace) -> ModelConfig:
    buckets = tuple(int(b) for b in args.buckets.split(","))
    return ModelConfig(
        num_instances=args.instances,
        batching=BatchingConfig(
            max_batch_size=args.max_batch,
            max_queue_delay_us=args.queue_delay_us,
            preferred_batch_sizes=tuple(b for b in buckets if b > 1),
        ),
        versions=VersionPolicy(warmup_batch_sizes=buckets),
    )


async def main(args: argparse.Namespace) -> bool:
    backend = TorchBackend()
    artifact, build_seconds = build(args, backend)
    runtime = Runtime()
    config = model_config(args)
    runtime.add_model("ctr", config)
    status = await runtime.load_version("ctr", "1", lambda: backend.load(artifact)).wait()
    if status.state is not VersionState.READY:
        raise SystemExit(f"the CTR engine did not become ready: {status}")

    def started(running: RunningServer) -> None:
        ready = {
            "http_port": running.http_port,
            "grpc_port": running.grpc_port,
            "build_seconds": round(build_seconds, 2),
            "buckets": args.buckets,
            "max_batch_size": args.max_batch,
            "instances": args.instances,
            "max_queue_delay_us": args.queue_delay_us,
        }
        args.ready_file.write_text(json.dumps(ready))

    server = ServerConfig(host="127.0.0.1", http_port=args.http_port, grpc_port=args.grpc_port)
    try:
        return await serve(runtime, None, server, on_started=started)
    finally:
        await runtime.aclose()


if __name__ == "__main__":
    arguments = _parse()
    arguments.work.mkdir(parents=True, exist_ok=True)
    loop = new_event_loop()
    try:
        raise SystemExit(0 if loop.run_until_complete(main(arguments)) else 1)
    finally:
        loop.close()
