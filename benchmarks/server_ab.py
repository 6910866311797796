"""A/B of kiln's HTTP path: the server of another source tree ("before") against this one
("after"), interleaved in one run on one machine, with the plain ONNX Runtime server of
``benchmarks/server.py`` as the reference in every round.

    python benchmarks/server_ab.py --before-src OLD/src --rounds 3 --out bench-out
    python benchmarks/server_ab.py --before-src OLD/src --size tiny --rounds 3 --out bench-out

``--before-src`` is the ``src`` folder of another kiln tree (e.g. ``git archive main src | tar -x -C OLD``,
with the gRPC stubs of ``src/kiln/server/grpc/_generated`` copied in); its ``kiln`` is imported first by the
"before" server. ``--after-src`` does the same for the "after" server (default: the kiln this
Python imports). Each round starts each server afresh and measures it over HTTP (binary tensors,
batch 1, concurrency 16) with perf_analyzer, as ``benchmarks/server.py`` does; the order within a
round alternates. Writes ``server_ab.json`` and ``server_ab.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from statistics import median

from server import HERE, PERF_ANALYZER, Process, Row, free_port, measure

from kiln.bench import describe_machine
from kiln.examples import build_model


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def kiln_command(args: argparse.Namespace, model: Path, work: Path, http: int, grpc: int) -> list[str]:
    return [
        sys.executable, str(HERE / "_kiln_server.py"), str(model), "--http-port", str(http),
        "--grpc-port", str(grpc), "--cache", str(work / "cache"), "--max-batch-size", "16",
        "--max-queue-delay-us", "0", "--instances", "1", "--ledger", str(work / "usage.db"),
    ]  # fmt: skip


def measure_kiln(args: argparse.Namespace, model: Path, work: Path, label: str, src: Path | None) -> Row:
    http, grpc = free_port(), free_port()
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    command = kiln_command(args, model, work, http, grpc)
    with Process(command, http, work / f"{label}.log", env=env) as server:
        return measure(label, server.process.pid, f"127.0.0.1:{http}", "http", 16, args.window_ms, work)


def measure_plain(args: argparse.Namespace, model: Path, work: Path) -> Row:
    port = free_port()
    command = [sys.executable, str(HERE / "_plain_server.py"), str(model), "--port", str(port)]
    with Process(command, port, work / "plain.log") as server:
        return measure("plain ORT", server.process.pid, f"127.0.0.1:{port}", "http", 16, args.window_ms, work)


def run(args: argparse.Namespace, work: Path) -> list[dict[str, object]]:
    model = build_model("ctr", work / "ctr.onnx", size=args.size)
    results: list[dict[str, object]] = []
    for index in range(args.rounds):
        order = [("before", args.before_src), ("after", args.after_src)]
        if index % 2:
            order.reverse()
        for label, src in order:
            load = load_average()
            row = measure_kiln(args, model, work, label, src)
            results.append({"round": index + 1, "load_start": load, "load_end": load_average()} | asdict(row))
            print(results[-1], flush=True)
        load = load_average()
        row = measure_plain(args, model, work)
        results.append({"round": index + 1, "load_start": load, "load_end": load_average()} | asdict(row))
        print(results[-1], flush=True)
    return results


def render(results: Sequence[dict[str, object]], meta: dict[str, object]) -> str:
    lines = [
        f"kiln HTTP A/B, {meta['date']}: ctr ({meta['size']}), batch 1, concurrency 16, {meta['machine']}",
        "",
        "| round | server | inferences/s | p50 ms | p99 ms | server CPU µs/request | load (start, end) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['round']} | {r['server']} | {r['per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['server_cpu_us']:.0f} | {r['load_start']:.2f}, {r['load_end']:.2f} |"
        )
    lines += [
        "",
        "| server | median inferences/s | median p99 ms | median CPU µs/request |",
        "|---|---|---|---|",
    ]
    for name in ("before", "after", "plain ORT"):
        rows = [r for r in results if r["server"] == name]
        if rows:
            lines.append(
                f"| {name} | {median(float(r['per_s']) for r in rows):,.0f} "  # type: ignore[arg-type]
                f"| {median(float(r['p99_ms']) for r in rows):.2f} "  # type: ignore[arg-type]
                f"| {median(float(r['server_cpu_us']) for r in rows):.0f} |"  # type: ignore[arg-type]
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before-src", type=Path, required=True, help="the other checkout's src folder")
    parser.add_argument(
        "--after-src", type=Path, default=None, help="src folder of the 'after' code (default: this kiln)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for server_ab.json and server_ab.md")
    parser.add_argument("--size", choices=("tiny", "full"), default="full")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-ms", type=int, default=3000, help="perf_analyzer measurement window")
    args = parser.parse_args(argv)
    if not PERF_ANALYZER.exists():
        print(f"perf_analyzer is not installed at {PERF_ANALYZER}; run `make install`", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    machine = describe_machine()
    meta: dict[str, object] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "size": args.size,
        "machine": f"{machine.cpu}, {machine.cores} cores",
        "load_start": load_average(),
    }
    with tempfile.TemporaryDirectory(prefix="kiln-server-ab-") as scratch:
        results = run(args, Path(scratch))
    meta["load_end"] = load_average()
    meta["end"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = render(results, meta)
    (args.out / "server_ab.md").write_text(text)
    (args.out / "server_ab.json").write_text(json.dumps({"meta": meta, "rows": results}, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
