"""An example's int8 engine with and without some ONNX Runtime fusions: time per batch, side by side.

    python benchmarks/ort_fusions.py [--model ranker] [--disable SkipLayerNormFusion] [--size full]
        [--threads 1,2] [--batches 1,8,16] [--out FILE]

The example's int8 model (its recipe's precision pass, calibrated on its samples) is optimized by
ONNX Runtime twice, at ``ORT_ENABLE_ALL`` with every optimizer and without those of ``--disable``,
both through kiln's own build step (``write_optimized``). Each engine is then run on validation
samples with optimization off and spinning off, as kiln serves it; the two engines are timed in
alternation (7 rounds of at least 0.3 s each) so that a change of machine load hits both. Prints
and writes (``--out``) the median and best ms per batch. Timings are not asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from kiln.cli.demo import prepare_example
from kiln.compile.backends.onnxruntime_build import write_optimized
from kiln.compile.backends.onnxruntime_options import parse_fusions
from kiln.compile.backends.onnxruntime_session import ThreadPlan, serving_options
from kiln.compile.data import load_samples
from kiln.compile.precision import apply_precision
from kiln.examples.recipes import build_spec

ROUNDS = 7
ROUND_S = 0.3


def engines(name: str, size: str, disabled: tuple[str, ...], work: Path) -> dict[str, Path]:
    folder = prepare_example(work / "examples", name, size)  # type: ignore[arg-type]
    spec = build_spec(name, "int8", size=size).with_changes(backend_options=())  # type: ignore[arg-type]
    precise = apply_precision(
        onnx.load(folder / f"{name}.onnx"), spec, calibration=load_samples(folder / "calibration"),
        calibration_table=None, progress=None, workdir=work,
    ).model  # fmt: skip
    out = {}
    for label, fusions in (("all optimizers", ()), ("without " + ",".join(disabled), disabled)):
        target = work / label.replace(" ", "-").replace(",", "-")
        target.mkdir()
        write_optimized(precise, target, work, disabled_fusions=fusions)
        out[label] = target / "engine.onnx"
    return out


def time_engines(
    paths: dict[str, Path], feeds: dict[str, np.ndarray], threads: int
) -> dict[str, list[float]]:
    import onnxruntime as ort

    plan = ThreadPlan(threads, 1, False, "benchmark")
    sessions = {
        label: ort.InferenceSession(str(p), serving_options(plan), providers=["CPUExecutionProvider"])
        for label, p in paths.items()
    }
    for session in sessions.values():
        for _ in range(3):
            session.run(None, feeds)
    times: dict[str, list[float]] = {label: [] for label in sessions}
    for _ in range(ROUNDS):
        for label, session in sessions.items():
            started, runs = time.perf_counter(), 0
            while runs < 3 or time.perf_counter() - started < ROUND_S:
                session.run(None, feeds)
                runs += 1
            times[label].append((time.perf_counter() - started) / runs * 1e3)
    return times


def _without_out(args: list[str]) -> list[str]:
    """The arguments without ``--out FILE`` (it names this machine's paths)."""
    kept, skip = [], False
    for arg in args:
        if not skip and arg != "--out" and not arg.startswith("--out="):
            kept.append(arg)
        skip = arg == "--out"
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ranker")
    parser.add_argument("--disable", default="SkipLayerNormFusion", help="optimizer names, comma-separated")
    parser.add_argument("--size", default="full", choices=("tiny", "full"))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", default="1,8,16")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    disabled = parse_fusions(args.disable)
    load_start = os.getloadavg()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rows = []
    with tempfile.TemporaryDirectory(prefix="kiln-fusions-") as scratch:
        work = Path(scratch)
        paths = engines(args.model, args.size, disabled, work)
        samples = load_samples(work / "examples" / args.model / "validation").inputs
        for threads in (int(t) for t in args.threads.split(",")):
            for batch in (int(b) for b in args.batches.split(",")):
                feeds = {k: np.ascontiguousarray(v[:batch]) for k, v in samples.items()}
                for label, ms in time_engines(paths, feeds, threads).items():
                    row = {"threads": threads, "batch": batch, "engine": label,
                           "median_ms": float(np.median(ms)), "best_ms": min(ms)}  # fmt: skip
                    rows.append(row)
                    print(f"threads {threads} batch {batch:3d} {label:40s} median {row['median_ms']:7.2f} ms "
                          f"best {row['best_ms']:7.2f} ms", flush=True)  # fmt: skip
    result = {
        "command": " ".join(["python benchmarks/ort_fusions.py", *_without_out(argv or sys.argv[1:])]),
        "started_at": started_at, "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
        "model": args.model, "size": args.size, "disabled": list(disabled), "rows": rows,
    }  # fmt: skip
    print(f"load average {load_start[0]:.2f} -> {result['load_avg_end'][0]:.2f}")  # type: ignore[index]
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
