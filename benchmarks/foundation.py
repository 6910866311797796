"""Foundation benchmark: what kiln's engines and its engine cache buy, per example model.

    python benchmarks/foundation.py [--quick] [--builds-only] [--rounds N] [--only NAME ...]
                                    [--out DIR] [--work DIR]

For each example model (ctr, cnn, ranker), side by side in one process:

* serving speed of the variants on the same inputs: the source model in ONNX Runtime with graph
  optimizations off (the unoptimized fp32 baseline: 2 intra-op threads, ONNX Runtime's defaults
  otherwise), kiln's fp32 engine and kiln's int8 engine (both loaded as kiln loads them: threads
  from the model's work, no spinning), and the int8 engine again with ``allow_spinning``.
  Latency p50/p99 at batch 1, throughput at batch 32. The variants run in alternating blocks of
  about 0.3 s, the order rotating each round, so that load from other processes hits all of
  them alike;
* accuracy of the engines against the unoptimized fp32 model on an evaluation set larger than
  the build's validation set (CNN top-1 agreement, CTR AUC drop, ranker Spearman);
* build time through the cache: a full int8 build, a cache hit, and two weight-only updates (the
  same graph fine-tuned: its weights moved by 1 % of their spread; and the same graph with
  seed-1 weights, unrelated to the first), each the wall time of one ``build_engine`` call, repeated in
  fresh caches.

``--builds-only`` measures the build times alone (no fp32 build, no speed or accuracy runs): a
few minutes instead of 8-15. Writes ``foundation.md`` (tables) and ``foundation.json`` (every
number) into ``--out``. Timings are not asserted anywhere; ``--quick`` runs the tiny models
briefly, as a smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import render_markdown

from kiln.cache.builder import BuildReport
from kiln.cache.pipeline import BuildRequest, build_engine
from kiln.cache.store import EngineStore
from kiln.cli.demo import prepare_example
from kiln.compile.accuracy import measure_accuracy
from kiln.compile.data import SampleSet, load_samples
from kiln.compile.registry import create_backend
from kiln.examples import EXAMPLES, Size, write_samples
from kiln.examples.recipes import build_spec
from kiln.types import Array

Run = Callable[[dict[str, Array]], Array]
Raw = dict[str, dict[str, dict[str, list[float]]]]
"""variant -> batch kind -> {"calls": seconds of every call, "cpu": CPU s per wall s per block}"""
EVALUATION_COUNT = {"ctr": 8192, "cnn": 512, "ranker": 1024}
BATCH = 32


@dataclass(frozen=True)
class Settings:
    size: Size
    rounds: int
    build_rounds: int
    block_s: float
    calibration_samples: int | None
    evaluation_scale: float


FULL = Settings(
    "full", rounds=10, build_rounds=3, block_s=0.3, calibration_samples=None, evaluation_scale=1.0
)
QUICK = Settings(
    "tiny", rounds=2, build_rounds=1, block_s=0.01, calibration_samples=256, evaluation_scale=0.1
)


@dataclass(frozen=True)
class Variant:
    name: str
    run: Run
    threads: str


def unoptimized(model_path: Path) -> Variant:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    first = session.get_outputs()[0].name

    def run(inputs: dict[str, Array]) -> Array:
        return np.asarray(session.run([first], inputs)[0])

    return Variant("fp32 unoptimized", run, "2")


def kiln_engine(name: str, artifact_path: Path, *, spinning: bool = False) -> Variant:
    from kiln.compile.backends.base import EngineArtifact, LoadOptions

    options = LoadOptions(allow_spinning=True) if spinning else None
    engine = create_backend("onnxruntime").load(EngineArtifact.read(artifact_path), options)
    instance = engine.create_instance()
    first = engine.outputs[0].name

    def run(inputs: dict[str, Array]) -> Array:
        return instance.run(inputs)[first]

    plan = getattr(engine, "thread_plan", None)
    return Variant(name, run, str(plan.intra_op_threads) if plan else "?")


# -- builds ---------------------------------------------------------------------------------------


def timed_build(request: BuildRequest) -> tuple[float, BuildReport]:
    started = time.perf_counter()
    report = build_engine(request)
    return time.perf_counter() - started, report


def phases(wall_s: float, report: BuildReport) -> dict[str, float]:
    """Where one build's wall time went: outside the key's lock (loading and checking the model
    and samples), the backend (precision pass, optimization), and checking accuracy."""
    backend_s = report.artifact.manifest.build_seconds if report.path != "hit" else 0.0
    return {
        "outside_lock": wall_s - report.build_seconds - report.wait_seconds,
        "backend": backend_s,
        "check_and_commit": report.build_seconds - backend_s,
    }


def fine_tuned(model: Path, path: Path, spread: float = 0.01) -> Path:
    """``model`` with every weight tensor moved a little (normal noise of ``spread`` x the
    tensor's standard deviation, seeded), as a fine-tune moves it: the same structure, new
    weights, ranges close to the old ones. One-element constants are left alone. Written once."""
    from onnx import numpy_helper

    if path.exists():
        return path
    source = onnx.load(str(model))
    rng = np.random.default_rng(7)
    for tensor in source.graph.initializer:
        value = numpy_helper.to_array(tensor)
        if value.dtype != np.float32 or value.size <= 1:
            continue
        moved = value + rng.normal(0.0, spread * float(value.std()), value.shape).astype(np.float32)
        tensor.CopyFrom(numpy_helper.from_array(moved.astype(np.float32), tensor.name))
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(source, str(path))
    return path


def _update_facts(report: BuildReport) -> dict[str, object]:
    """What a weight-only update's manifest says about its refit (absent for a rebuild)."""
    extra = report.artifact.manifest.extra
    refit = extra.get("refit")
    scales = refit.get("scales") if isinstance(refit, dict) else None
    return {
        key: extra.get(key)
        for key in ("refit_seconds", "refit_clipped_values", "refit_replaced_initializers")
    } | {"scales": scales}


def warm_up(scratch: Path) -> None:
    """One tiny int8 build, so that imports and ONNX Runtime's first-session costs are paid before
    anything is timed (a server or repository process pays them once)."""
    folder = prepare_example(scratch / "warm-up", "ctr", "tiny")
    spec = build_spec("ctr", "int8", size="tiny", num_calibration_samples=64)
    build_engine(
        BuildRequest(folder / "ctr.onnx", spec, calibration=folder / "calibration", cache=scratch / "c")
    )


def measure_builds(
    folder: Path, name: str, settings: Settings, scratch: Path, *, with_fp32: bool = True
) -> dict[str, object]:
    """Full int8 build, hit and weight-only update, ``build_rounds`` times in fresh caches; the
    last round's cache is kept and its engines benchmarked (``with_fp32``: an fp32 engine too)."""
    load_before = os.getloadavg()
    spec = build_spec(name, "int8", size=settings.size, num_calibration_samples=settings.calibration_samples)
    times: dict[str, list[float]] = {"full": [], "hit": [], "hit_and_load": [], "tune": [], "update": []}
    breakdown: dict[str, list[dict[str, float]]] = {"full": [], "hit": [], "tune": [], "update": []}
    paths: dict[str, str] = {}
    model, retrained = folder / f"{name}.onnx", folder / "retrained" / f"{name}.onnx"
    tuned = fine_tuned(model, folder / "fine-tuned" / f"{name}.onnx")
    accuracies: dict[str, object] = {}
    extras: dict[str, object] = {}
    for round_index in range(settings.build_rounds):
        store = EngineStore(scratch / f"cache-{round_index}")
        for step, source, validation in (
            ("full", model, folder / "validation"),
            ("hit", model, folder / "validation"),
            ("tune", tuned, folder / "validation"),
            ("update", retrained, folder / "retrained" / "validation"),
        ):
            request = BuildRequest(
                source, spec, calibration=folder / "calibration", validation=validation, cache=store
            )
            seconds, report = timed_build(request)
            times[step].append(seconds)
            breakdown[step].append(phases(seconds, report))
            paths[step] = report.path
            if step in ("tune", "update"):
                accuracies[step] = report.accuracy
                extras[step] = _update_facts(report)
            if step == "full":
                int8_report = report
            if step == "hit":
                started = time.perf_counter()
                kiln_engine("probe", report.artifact.path)
                times["hit_and_load"].append(seconds + time.perf_counter() - started)
    load_after = os.getloadavg()
    fp32: dict[str, object] = {"fp32_build_s": None, "fp32_artifact": None}
    if with_fp32:
        fp32_seconds, fp32_report = timed_build(
            BuildRequest(
                model,
                build_spec(name, "fp32", size=settings.size),
                validation=folder / "validation",
                cache=store,
            )
        )
        fp32 = {"fp32_build_s": fp32_seconds, "fp32_artifact": str(fp32_report.artifact.path)}
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {
        "spec": spec.to_json(),
        "seconds": times,
        "median_s": medians,
        "phases_median_s": {
            step: {key: statistics.median(p[key] for p in rows) for key in rows[0]}
            for step, rows in breakdown.items()
        },
        "paths": paths,
        "hit_ratio": medians["hit"] / medians["full"],
        "hit_and_load_ratio": medians["hit_and_load"] / medians["full"],
        "tune_ratio": medians["tune"] / medians["full"],
        "update_ratio": medians["update"] / medians["full"],
        **fp32,
        "int8_artifact": str(int8_report.artifact.path),
        "int8_build_accuracy": int8_report.accuracy,
        "tune_accuracy": accuracies["tune"],
        "update_accuracy": accuracies["update"],
        "update_extra": extras,
        "load_average": {"before": load_before, "after": load_after},
    }


# -- speed ----------------------------------------------------------------------------------------


def calls_per_block(run: Run, inputs: dict[str, Array], block_s: float) -> int:
    run(inputs)
    started = time.perf_counter()
    run(inputs)
    once = max(time.perf_counter() - started, 1e-6)
    return max(1, min(2000, round(block_s / once)))


def interleaved(
    variants: list[Variant], batches: dict[str, list[dict[str, Array]]], settings: Settings
) -> Raw:
    """Per variant and batch kind: every call's seconds and the CPU-seconds per wall-second."""
    found: Raw = {v.name: {kind: {"calls": [], "cpu": []} for kind in batches} for v in variants}
    counts = {
        (v.name, kind): calls_per_block(v.run, batch[0], settings.block_s)
        for v in variants
        for kind, batch in batches.items()
    }
    for round_index in range(settings.rounds):
        order = variants[round_index % len(variants) :] + variants[: round_index % len(variants)]
        for kind, inputs in batches.items():
            for variant in order:
                calls, cpu = _block(variant.run, inputs, counts[(variant.name, kind)])
                found[variant.name][kind]["calls"] += calls
                found[variant.name][kind]["cpu"].append(cpu)
    return found


def _block(run: Run, inputs: list[dict[str, Array]], count: int) -> tuple[list[float], float]:
    calls = []
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        started = time.perf_counter()
        run(inputs[i % len(inputs)])
        calls.append(time.perf_counter() - started)
    return calls, (time.process_time() - cpu) / max(time.perf_counter() - wall, 1e-9)


def speed_summary(raw: Raw) -> dict[str, dict[str, float]]:
    summary = {}
    for name, kinds in raw.items():
        b1, b32 = kinds["b1"]["calls"], kinds["b32"]["calls"]
        summary[name] = {
            "b1_p50_ms": 1e3 * float(np.percentile(b1, 50)),
            "b1_p99_ms": 1e3 * float(np.percentile(b1, 99)),
            "b32_p50_ms": 1e3 * float(np.percentile(b32, 50)),
            "b32_samples_per_s": BATCH * len(b32) / sum(b32),
            "b1_calls": len(b1),
            "b32_calls": len(b32),
            "cpu_per_wall": statistics.median(kinds["b1"]["cpu"] + kinds["b32"]["cpu"]),
        }
    return summary


# -- accuracy -------------------------------------------------------------------------------------


def evaluate(name: str, variants: list[Variant], samples: SampleSet) -> dict[str, dict[str, object]]:
    """Each kiln engine against the unoptimized fp32 model on ``samples``."""
    outputs = {}
    for variant in variants:
        parts = [variant.run(dict(batch)) for batch in samples.batches(BATCH)]
        outputs[variant.name] = np.concatenate(parts)
    reference = outputs[variants[0].name]
    task = EXAMPLES[name].task
    return {
        v.name: measure_accuracy(reference, outputs[v.name], task=task, labels=samples.labels).to_json()
        for v in variants[1:]
    }


# -- the run --------------------------------------------------------------------------------------


def benchmark_model(
    name: str, work: Path, settings: Settings, *, builds_only: bool = False
) -> dict[str, object]:
    folder = prepare_example(work, name, settings.size)
    count = max(32, int(EVALUATION_COUNT[name] * settings.evaluation_scale))
    evaluation = folder / f"evaluation-{count}"
    if not evaluation.exists():
        write_samples(
            name,
            evaluation,
            count=count,
            kind="validation",
            size=settings.size,
            model=folder / f"{name}.onnx",
        )
    with tempfile.TemporaryDirectory(prefix=f"kiln-bench-{name}-") as scratch:
        builds = measure_builds(folder, name, settings, Path(scratch), with_fp32=not builds_only)
        if builds_only:
            for temporary in ("int8_artifact", "fp32_artifact"):
                builds.pop(temporary)
            return {"name": name, "builds": builds}
        variants = [
            unoptimized(folder / f"{name}.onnx"),
            kiln_engine("kiln fp32", Path(str(builds["fp32_artifact"]))),
            kiln_engine("kiln int8", Path(str(builds["int8_artifact"]))),
            kiln_engine("kiln int8, spinning", Path(str(builds["int8_artifact"])), spinning=True),
        ]
        samples = load_samples(evaluation)
        batches = {
            "b1": [
                {k: v[i : i + 1] for k, v in samples.inputs.items()} for i in range(min(64, len(samples)))
            ],
            "b32": [{k: v[:BATCH] for k, v in samples.inputs.items()}],
        }
        load_before = os.getloadavg()
        raw = interleaved(variants, batches, settings)
        load_after = os.getloadavg()
        accuracy = evaluate(name, variants, samples)
    speed = speed_summary(raw)
    base = speed["fp32 unoptimized"]
    for temporary in ("int8_artifact", "fp32_artifact"):  # in a deleted scratch folder by now
        builds.pop(temporary)
    return {
        "name": name,
        "threads": {v.name: v.threads for v in variants},
        "speed": speed,
        "ratios": {
            v: {
                "b32_throughput_vs_unoptimized": speed[v]["b32_samples_per_s"] / base["b32_samples_per_s"],
                "b1_p50_speedup_vs_unoptimized": base["b1_p50_ms"] / speed[v]["b1_p50_ms"],
            }
            for v in speed
        },
        "accuracy": accuracy,
        "evaluation_samples": len(samples),
        "builds": builds,
        "load_average": {"before": load_before, "after": load_after},
    }


def machine() -> dict[str, object]:
    import onnxruntime

    from kiln.compile.backends.cpu import read_cpu_info, usable_cpus

    cpu = read_cpu_info()
    return {
        "cpu": cpu.model_name,
        "isa": cpu.isa_level,
        "cpus": usable_cpus(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, short blocks: a smoke run")
    parser.add_argument(
        "--builds-only",
        action="store_true",
        help="only the build times (no fp32 build, speed or accuracy runs)",
    )
    parser.add_argument("--rounds", type=int, help="interleaved speed rounds (default 10; quick 2)")
    parser.add_argument("--build-rounds", type=int, help="repeats of the build timings (default 3; quick 1)")
    parser.add_argument("--only", nargs="+", choices=list(EXAMPLES), help="only these models")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results"), help="where the .md and .json go"
    )
    parser.add_argument("--work", type=Path, default=Path(".kiln/bench"), help="models and samples (reused)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.rounds or args.build_rounds:
        settings = Settings(
            settings.size,
            args.rounds or settings.rounds,
            args.build_rounds or settings.build_rounds,
            settings.block_s,
            settings.calibration_samples,
            settings.evaluation_scale,
        )
    models: list[dict[str, object]] = []
    results = {
        "machine": machine(),
        "settings": settings.__dict__,
        "builds_only": args.builds_only,
        "models": models,
    }
    with tempfile.TemporaryDirectory(prefix="kiln-bench-warm-up-") as scratch:
        warm_up(Path(scratch))
    for name in args.only or list(EXAMPLES):
        print(f"benchmarking {name} ({settings.size}) ...", file=sys.stderr, flush=True)
        models.append(
            benchmark_model(name, args.work / settings.size, settings, builds_only=args.builds_only)
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "foundation.json").write_text(json.dumps(results, indent=2, default=str))
    markdown = render_markdown(results)
    (args.out / "foundation.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
