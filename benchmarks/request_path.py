"""kiln's own cost per inference request, in process: no sockets, no load generator.

    python benchmarks/request_path.py [--seconds S] [--concurrency N] [--profile FILE]

``--concurrency`` tasks on one uvloop event loop each send the full-size CTR example's request
(KServe v2 binary tensors, batch 1) through what the HTTP front end does with a body: the codec's
``decode_request``, ``ServerCore.infer`` (kiln's runtime, one instance, max batch 16, no queue
delay, SQLite metering as ``kiln serve`` keeps it) and ``encode_response``. Reported: requests/s
and the process's CPU time per request (all threads), the numbers that the socket and the load
generator of ``benchmarks/server.py`` blur on a shared machine. ``--profile`` writes a cProfile of
the run (``pstats`` format).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from kiln.bench.engines import obtain_bench_engine
from kiln.examples import build_model
from kiln.metering.meter import Metering
from kiln.runtime import BatchingConfig, ModelConfig, Runtime
from kiln.server.core import ServerCore
from kiln.server.http.codec import decode_request, encode_response
from kiln.server.serve import new_event_loop


def binary_request(runtime: Runtime, name: str) -> tuple[bytes, int]:
    """One batch-1 request of random inputs in Triton's binary tensor form, and its header length."""
    rng = np.random.default_rng(0)
    entries, raws = [], []
    for spec in runtime.model(name).status().inputs:
        shape = [1, *(d if d > 0 else 1 for d in spec.shape[1:])]
        dtype = np.dtype(spec.datatype.lower().replace("fp", "float"))
        values = rng.integers(0, 10, shape) if dtype.kind in "iu" else rng.random(shape)
        raw = np.ascontiguousarray(values, dtype=dtype).tobytes()
        entries.append({"name": spec.name, "datatype": spec.datatype, "shape": shape,
                        "parameters": {"binary_data_size": len(raw)}})  # fmt: skip
        raws.append(raw)
    header = json.dumps({"inputs": entries, "parameters": {"binary_data_output": True}}).encode()
    return header + b"".join(raws), len(header)


async def client(
    core: ServerCore, body: bytes, header_length: int, stop_at: float, counts: list[int]
) -> None:
    while time.perf_counter() < stop_at:
        request, plan = decode_request(body, header_length, model="ctr", version=None, tenant="bench")
        response = await core.infer(request)
        encode_response(response, plan)
        counts[0] += 1


async def measure(args: argparse.Namespace, work: Path) -> dict[str, float]:
    model = build_model("ctr", work / "ctr.onnx", size="full")
    engine = obtain_bench_engine(model, cache_dir=work / "cache", intra_op_threads=1).engine
    runtime = Runtime()
    batching = BatchingConfig(max_batch_size=16, max_queue_delay_us=0)
    runtime.add_model("ctr", ModelConfig(batching=batching))
    await runtime.load_version("ctr", "1", engine).wait()
    meter = Metering.open(work / "usage.sqlite")
    core = ServerCore(runtime, meter=meter)
    body, header_length = binary_request(runtime, "ctr")
    counts = [0]
    await asyncio.gather(*(client(core, body, header_length, time.perf_counter() + 0.5, counts)
                           for _ in range(args.concurrency)))  # fmt: skip
    counts[0] = 0
    profile = cProfile.Profile() if args.profile else None
    cpu, wall = time.process_time(), time.perf_counter()
    if profile is not None:
        profile.enable()
    await asyncio.gather(*(client(core, body, header_length, wall + args.seconds, counts)
                           for _ in range(args.concurrency)))  # fmt: skip
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await runtime.aclose()
    meter.close()
    return {"requests": counts[0], "per_s": counts[0] / wall, "cpu_us_per_request": cpu / counts[0] * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kiln-request-path-") as scratch:
        loop = new_event_loop()
        try:
            result = loop.run_until_complete(measure(args, Path(scratch)))
        finally:
            loop.close()
    load = os.getloadavg()[0]
    print(f"{result['per_s']:,.0f} requests/s, {result['cpu_us_per_request']:.1f} µs CPU per request "
          f"({result['requests']} requests, concurrency {args.concurrency}, load {load:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
