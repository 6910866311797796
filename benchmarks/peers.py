"""kiln against its peers: max throughput at a p99 SLO, per example model, on this machine.

    python benchmarks/peers.py [--quick] [--models ctr,ranker,cnn] [--variants kiln,...] [--step-s S]
        [--instances N] [--intra-op-threads N] [--max-batch-size N] [--max-queue-delay-us N]
        [--out DIR] [--work DIR]

For each example model, four servers are started one after the other on loopback, each in its own
process, and driven by the same load generator (``kiln bench``'s KServe v2 client over HTTP, inputs
in the binary-tensor extension, real validation samples) through the same closed-loop concurrency
sweep, which raises the concurrency until it finds each server's capacity (``kiln.bench.sweep``:
until p99 is over the SLO twice or throughput stops rising, refining between the last step within
the SLO and the first over it):

* ``kiln``: kiln's server (runtime with dynamic batching) on the int8 engine kiln builds with the
  example's recipe (accuracy checked against fp32 at build time), with the model's instances and
  threads per run (``ModelPlan``; ``--instances`` etc. override them for every model);
* ``unoptimized``: the exported fp32 model, graph optimizations off, one run at a time, no batching;
* ``fastapi-ort``: FastAPI + ONNX Runtime (default optimizations), one request per run;
* ``litserve``: LitServe + ONNX Runtime with LitServe's batching on (same batch limit and wait as kiln).

The capacity of each is its highest throughput among the steps whose p99 stayed within the model's
SLO (CTR 5 ms, ranker 50 ms, CNN 200 ms); kiln's ratio to each is reported, and kiln's ratio to the
unoptimized baseline is recorded as the engine's efficiency factor in its manifest. perf_analyzer
then measures kiln's server again at two concurrencies, as a cross-check of the load generator.

Writes ``peers.json``, ``peers.md`` and ``peers-<model>.png`` into ``--out``. ``--quick`` runs the
tiny models briefly, as a smoke test; ``--variants`` measures only some servers (the ratios then
show only those). Timings are not asserted anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from kiln.bench.efficiency import Point, capacity_of, ratio
from kiln.bench.inputs import RequestPool
from kiln.bench.kserve import KServeTarget
from kiln.bench.machine import describe_machine
from kiln.bench.peers import PeerProcess, PeerSpec
from kiln.bench.peers.ort import signature
from kiln.bench.perf_analyzer import (
    find_perf_analyzer,
    perf_analyzer_command,
    run_perf_analyzer,
    write_input_data,
)
from kiln.bench.results import StepResult
from kiln.bench.runner import BenchPlan, run_bench
from kiln.bench.sweep import SweepPolicy, SweepStep, next_concurrency
from kiln.cache.efficiency import record_efficiency_factor
from kiln.cache.pipeline import BuildRequest, build_engine
from kiln.cli.demo import prepare_example
from kiln.errors import ConfigError
from kiln.examples.recipes import build_spec

VARIANTS = ("kiln", "unoptimized", "fastapi-ort", "litserve")
LABELS = {
    "kiln": "kiln (int8 engine, dynamic batching)",
    "unoptimized": "unoptimized (fp32, no graph opt., 1 at a time)",
    "fastapi-ort": "FastAPI + ONNX Runtime",
    "litserve": "LitServe + ONNX Runtime (batching)",
}
TARGETS = {"fastapi-ort": 2.0, "litserve": 1.3}
CNN_UNOPTIMIZED_TARGET = 4.5


@dataclass(frozen=True)
class ModelPlan:
    """One model's SLO and sweep limit, and kiln's serving settings for it (batching also LitServe's).

    ``instances`` x ``intra_op_threads``: kiln's execution instances and threads per engine run
    (0: kiln's thread policy, which splits the CPUs among the instances).
    """

    name: str
    slo_ms: float
    max_concurrency: int
    max_batch_size: int
    max_queue_delay_us: int
    instances: int = 1
    intra_op_threads: int = 0

    def sweep_policy(self, quick: bool) -> SweepPolicy:
        if quick:  # a smoke test: two steps, 1 and 4, whatever their latency
            return SweepPolicy(slo_ms=60_000.0, growth=4.0, max_concurrency=4)
        return SweepPolicy(slo_ms=self.slo_ms, max_concurrency=self.max_concurrency)


PLANS = {
    "ctr": ModelPlan("ctr", 5.0, 128, 64, 500),
    "ranker": ModelPlan("ranker", 50.0, 64, 8, 2000, instances=2, intra_op_threads=1),
    "cnn": ModelPlan("cnn", 200.0, 64, 4, 2000, instances=2, intra_op_threads=1),
}


@dataclass(frozen=True)
class Settings:
    quick: bool
    models: tuple[str, ...]
    step_s: float
    warmup_s: float
    out: Path
    work: Path | None
    cross_check: bool
    dispatch_when_idle: bool = True
    variants: tuple[str, ...] = VARIANTS
    kiln_overrides: tuple[tuple[str, int], ...] = ()
    """ModelPlan fields set for every model (``--instances`` and the like)."""


def kiln_engine(folder: Path, name: str, size: str, cache: Path) -> tuple[Path, dict[str, object]]:
    """The int8 engine kiln builds for the example (the recipe's accuracy bound enforced)."""
    report = build_engine(
        BuildRequest(
            model=folder / f"{name}.onnx",
            spec=build_spec(name, "int8", size=size),  # type: ignore[arg-type]
            calibration=folder / "calibration",
            validation=folder / "validation",
            cache=cache,
        )
    )
    return report.artifact.path, dict(report.accuracy or {})


async def python_steps(url: str, name: str, pool: RequestPool, concurrency: tuple[int, ...],
                       settings: Settings) -> tuple[StepResult, ...]:  # fmt: skip
    """``kiln bench``'s own client (Python, asyncio) at ``concurrency``: the cross-check."""
    bench = BenchPlan(concurrency=concurrency, duration_s=settings.step_s, warmup_s=settings.warmup_s)
    report = await run_bench(KServeTarget(url, name), bench, requests=pool, model=name)
    return next(iter(report.variants.values()), ())


def perf_step(
    peer: PeerProcess, name: str, concurrency: int, data: Path, settings: Settings
) -> dict[str, object]:
    """perf_analyzer at one concurrency; its row plus the server's CPU over the run."""
    csv_path = data.with_name(f"perf-{name}-{concurrency}.csv")
    address = peer.url.removeprefix("http://")
    command = perf_analyzer_command(
        find_perf_analyzer(), address, name, concurrency=(concurrency, concurrency, 1),
        input_data=data, csv_path=csv_path, measurement_ms=int(settings.step_s * 1000),
    )  # fmt: skip
    cpu, wall = peer.cpu_seconds(), time.perf_counter()
    (row,) = run_perf_analyzer(command, csv_path)
    cores = (peer.cpu_seconds() - cpu) / (time.perf_counter() - wall)
    return {**row.to_json(), "label": f"c={concurrency}", "server_cores": cores,
            "server_cpu_ms_per_request": cores * 1e3 / max(row.throughput_per_s, 1e-9)}  # fmt: skip


Rows = list[dict[str, object]]


def measure_variant(
    spec: PeerSpec, plan: ModelPlan, pool: RequestPool, data: Path, settings: Settings
) -> tuple[Rows, Rows, str]:
    """perf_analyzer's sweep of one server until its capacity (and, for kiln, kiln bench's client at
    the sweep's ends); the rows in concurrency order and why the sweep stopped."""
    cross: list[dict[str, object]] = []
    policy = plan.sweep_policy(settings.quick)
    steps: list[SweepStep] = []
    with PeerProcess(spec) as peer:
        rows = []
        while (decision := next_concurrency(policy, steps)).concurrency is not None:
            c = decision.concurrency
            try:
                row = perf_step(peer, plan.name, c, data, settings)
            except ConfigError as error:  # no stable measurement on a busy machine: note it, go on
                print(f"[{plan.name}] {spec.kind} c={c}: {str(error).splitlines()[-2:]}", flush=True)
                steps.append(SweepStep(c, 0.0, None))
                continue
            rows.append(row)
            steps.append(SweepStep(c, float(row["throughput_per_s"]), float(row["p99_ms"])))  # type: ignore[arg-type]
        rows.sort(key=lambda r: int(r["concurrency"]))  # type: ignore[call-overload]
        if spec.kind == "kiln" and settings.cross_check and rows:
            ends = tuple(sorted({int(rows[0]["concurrency"]), int(rows[-1]["concurrency"])}))  # type: ignore[call-overload]
            cross = [
                s.to_json() for s in asyncio.run(python_steps(peer.url, plan.name, pool, ends, settings))
            ]
    shown = ", ".join(f"{r['label']} {r['throughput_per_s']:.0f}/s p99 {r['p99_ms']:.1f} ms" for r in rows)
    print(f"[{plan.name}] {spec.kind}: {shown}; stopped: {decision.reason}", flush=True)
    return rows, cross, decision.reason


def run_model(plan: ModelPlan, settings: Settings, work: Path) -> dict[str, object]:
    size = "tiny" if settings.quick else "full"
    plan = dataclasses.replace(plan, **dict(settings.kiln_overrides))
    folder = prepare_example(work / "examples", plan.name, size)  # type: ignore[arg-type]
    model = folder / f"{plan.name}.onnx"
    artifact, accuracy = kiln_engine(folder, plan.name, size, work / "cache")
    inputs, _ = signature(model)
    pool = RequestPool.from_samples(folder / "validation", inputs, batch_size=1)
    data = write_input_data(RequestPool(pool.payloads[:256]), work / f"inputs-{plan.name}.json")
    rows: dict[str, list[dict[str, object]]] = {}
    stops: dict[str, str] = {}
    cross: list[dict[str, object]] = []
    for variant in settings.variants:
        source = artifact if variant == "kiln" else model
        spec = PeerSpec(variant, source, plan.name, max_batch_size=plan.max_batch_size,  # type: ignore[arg-type]
                        max_queue_delay_us=plan.max_queue_delay_us, cache_dir=work / "cache",
                        dispatch_when_idle=settings.dispatch_when_idle, instances=plan.instances,
                        intra_op_threads=plan.intra_op_threads)  # fmt: skip
        rows[variant], found, stops[variant] = measure_variant(spec, plan, pool, data, settings)
        cross = cross or found
    caps = {v: capacity_of(v, [Point(str(r["label"]), float(r["throughput_per_s"]), float(r["p99_ms"]))  # type: ignore[arg-type]
                               for r in rs], plan.slo_ms) for v, rs in rows.items()}  # fmt: skip
    factor = ratio(caps["kiln"], caps["unoptimized"]).value if {"kiln", "unoptimized"} <= set(caps) else None
    if factor is not None:
        record_efficiency_factor(artifact, factor)
    png = plot(rows, plan, size, settings.out / f"peers-{plan.name}.png")
    return {
        "model": plan.name, "size": size, "slo_ms": plan.slo_ms, "accuracy": accuracy,
        "kiln_settings": {"max_batch_size": plan.max_batch_size,
                          "max_queue_delay_us": plan.max_queue_delay_us,
                          "dispatch_when_idle": settings.dispatch_when_idle,
                          "instances": plan.instances, "intra_op_threads": plan.intra_op_threads},
        "sweep": {"policy": dataclasses.asdict(plan.sweep_policy(settings.quick)), "stopped": stops},
        "capacity": {v: c.to_json() for v, c in caps.items()},
        "ratios": {v: ratio(caps["kiln"], c).value if "kiln" in caps else None
                   for v, c in caps.items() if v != "kiln"},
        "efficiency_factor": factor, "plot": png.name,
        "peak_per_s": {v: max((float(r["throughput_per_s"]) for r in rs), default=0.0)  # type: ignore[arg-type]
                       for v, rs in rows.items()},
        "rows": rows, "kiln_bench_cross_check": cross,
    }  # fmt: skip


def plot(rows: dict[str, list[dict[str, object]]], plan: ModelPlan, size: str, path: Path) -> Path:
    """p99 latency against throughput, one line per server, the SLO as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for variant, points in rows.items():
        xs = [float(r["throughput_per_s"]) for r in points]  # type: ignore[arg-type]
        ys = [float(r["p99_ms"]) for r in points]  # type: ignore[arg-type]
        ax.plot(xs, ys, marker="o", label=LABELS[variant])
    ax.axhline(plan.slo_ms, color="grey", linestyle="--", label=f"SLO: p99 {plan.slo_ms:g} ms")
    ax.set_yscale("log")
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("p99 latency (ms, log scale)")
    ax.set_title(f"{plan.name} ({size}): p99 latency vs throughput\n"
                 "closed-loop concurrency sweep to capacity; perf_analyzer over HTTP")  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def capacity_cell(cap: dict[str, object]) -> str:
    if cap["step"] is None:
        best = cap["best_p99_ms"]
        return "none within SLO" + (f" (best p99 {best:.1f} ms)" if isinstance(best, float) else "")
    return f"{cap['throughput_per_s']:,.0f}/s ({cap['step']}, p99 {cap['p99_ms']:.1f} ms)"


def render_markdown(results: dict[str, object]) -> str:
    models = results["models"]
    assert isinstance(models, list)
    lines = ["| model | SLO p99 | kiln | unoptimized | FastAPI+ORT | LitServe "
             "| kiln × unopt. | kiln × FastAPI | kiln × LitServe |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for m in models:
        caps, ratios = m["capacity"], m["ratios"]
        cells = [capacity_cell(caps[v]) if v in caps else "not run" for v in VARIANTS]
        shown = [
            f"{ratios[v]:.2f}" if ratios.get(v) is not None else "–"
            for v in ("unoptimized", "fastapi-ort", "litserve")
        ]
        lines.append(f"| {m['model']} | {m['slo_ms']:g} ms | " + " | ".join(cells + shown) + " |")
    lines += ["", "| model | variant | peak throughput/s (any p99) | at | server CPU ms per request there |",
              "|---|---|---|---|---|"]  # fmt: skip
    for m in models:
        for v in VARIANTS:
            if v not in m["rows"]:
                continue
            if not m["rows"][v]:
                lines.append(f"| {m['model']} | {v} | no stable measurement | | |")
                continue
            peak = max(m["rows"][v], key=lambda r: r["throughput_per_s"])
            cells = [f"{peak['throughput_per_s']:,.0f}", f"{peak['label']}, p99 {peak['p99_ms']:.1f} ms",
                     f"{peak['server_cpu_ms_per_request']:.2f}"]  # fmt: skip
            lines.append(f"| {m['model']} | {v} | " + " | ".join(cells) + " |")
    lines += ["", "Every step (throughput/s, p99 ms) and why each sweep stopped:", "",
              "| model | server | steps: concurrency → throughput/s, p99 ms | sweep stopped |",
              "|---|---|---|---|"]  # fmt: skip
    for m in models:
        for v, rs in m["rows"].items():
            cells = ", ".join(
                f"c={r['concurrency']} → {r['throughput_per_s']:,.0f}, {r['p99_ms']:.1f}" for r in rs
            )
            lines.append(f"| {m['model']} | {v} | {cells} | {m['sweep']['stopped'][v]} |")
    lines += [
        "",
        "| model | client | concurrency | throughput/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for m in models:
        by_c = {r["concurrency"]: r for r in m["rows"]["kiln"]}
        for step in m["kiln_bench_cross_check"]:
            row = by_c.get(step["concurrency"])
            if row is None:
                continue
            lat = step.get("latency_ms")
            cells = [f"{step['throughput_per_s']:,.0f}", _ms(lat, "p50_ms"), _ms(lat, "p99_ms")]
            lines.append(f"| {m['model']} | kiln bench | {step['concurrency']} | " + " | ".join(cells) + " |")
            cells = [f"{row['throughput_per_s']:,.0f}", f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}"]
            lines.append(
                f"| {m['model']} | perf_analyzer | {row['concurrency']} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines) + "\n"


def _ms(summary: object, key: str) -> str:
    return f"{summary[key]:.2f}" if isinstance(summary, dict) else "?"


def verdict(model: dict[str, object], peer: str, want: float) -> str:
    """Met / missed for "kiln >= want x peer at the SLO"; a peer with no step within the SLO
    while kiln has one counts as met (the ratio is unbounded)."""
    caps = model["capacity"]  # type: ignore[index]
    if "kiln" not in caps or peer not in caps:
        return "not measured in this run"
    kiln, other = caps["kiln"], caps[peer]
    if kiln["step"] is None:
        return f"missed: kiln had no step within the SLO (best p99 {kiln['best_p99_ms']:.1f} ms)"
    if other["step"] is None:
        return f"met: {peer} had no step within the SLO (best p99 {other['best_p99_ms']:.1f} ms)"
    got = model["ratios"][peer]  # type: ignore[index]
    return f"{got:.2f}× — {'met' if got >= want else 'missed'}"


def target_lines(results: dict[str, object]) -> list[str]:
    lines = []
    for m in results["models"]:  # type: ignore[attr-defined]
        for peer, want in TARGETS.items():
            lines.append(f"{m['model']}: kiln ≥ {want}× {peer}: {verdict(m, peer, want)}")
        if m["model"] == "cnn":
            got = verdict(m, "unoptimized", CNN_UNOPTIMIZED_TARGET)
            lines.append(f"cnn: kiln ≥ {CNN_UNOPTIMIZED_TARGET}× unoptimized: {got}")
    return lines


def parse(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, short steps (a smoke test)")
    parser.add_argument("--models", default="ctr,ranker,cnn")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="servers to measure")
    for flag, field in (
        ("--instances", "kiln's instances"),
        ("--intra-op-threads", "kiln's threads per run"),
        ("--max-batch-size", "the batch limit"),
        ("--max-queue-delay-us", "the batching wait"),
    ):
        parser.add_argument(
            flag, type=int, default=None, help=f"{field} for every model (default: per model)"
        )
    parser.add_argument("--step-s", type=float, default=None, help="measured seconds per step")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--no-cross-check", action="store_true", help="skip kiln bench's own client on kiln")
    parser.add_argument("--no-dispatch-when-idle", action="store_true",
                        help="kiln waits out max_queue_delay_us even when idle")  # fmt: skip
    args = parser.parse_args(argv)
    models = tuple(m for m in args.models.split(",") if m)
    unknown = sorted(set(models) - set(PLANS))
    if unknown:
        parser.error(f"unknown models {unknown}; use {sorted(PLANS)}")
    variants = tuple(v for v in args.variants.split(",") if v)
    if not variants or set(variants) - set(VARIANTS):
        parser.error(f"--variants {args.variants!r}: use some of {','.join(VARIANTS)}")
    fields = ("instances", "intra_op_threads", "max_batch_size", "max_queue_delay_us")
    overrides = tuple((f, getattr(args, f)) for f in fields if getattr(args, f) is not None)
    step_s = args.step_s or (0.6 if args.quick else 3.0)
    return Settings(args.quick, models, step_s, 0.2 if args.quick else 0.7, args.out, args.work,
                    not args.no_cross_check, not args.no_dispatch_when_idle,
                    tuple(v for v in VARIANTS if v in variants), overrides)  # fmt: skip


def _public_args(args: list[str]) -> list[str]:
    """The arguments without scratch and output folders (they name this machine's paths)."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--work", "--out"):
            skip = True
        elif not arg.startswith(("--work=", "--out=")):
            kept.append(arg)
    return kept


def main(argv: list[str] | None = None) -> int:
    settings = parse(argv)
    settings.out.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="kiln-peers-") as scratch:
        work = settings.work or Path(scratch)
        models = [run_model(PLANS[m], settings, work) for m in settings.models]
    results: dict[str, object] = {
        "command": " ".join(["python benchmarks/peers.py", *_public_args(argv or sys.argv[1:])]),
        "started_at": started, "machine": describe_machine().to_json(), "load_avg": os.getloadavg(),
        "models": models,
    }  # fmt: skip
    results["targets"] = target_lines(results)
    (settings.out / "peers.json").write_text(json.dumps(results, indent=2, default=str))
    (settings.out / "peers.md").write_text(
        render_markdown(results) + "\n" + "\n".join(results["targets"]) + "\n"
    )  # type: ignore[arg-type]
    print(render_markdown(results))
    print("\n".join(results["targets"]))  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
