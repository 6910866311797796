"""Stages ``runtime`` and ``runtime-swaps``: kiln's runtime serving a torch engine on the GPU.

The example CNN (``kiln.examples`` ``cnn``: ResNet-18-style, 224x224 images; stage names ending in
``-resnet50``: torchvision's ResNet-50) is built by the torch backend in fp16 with batch buckets
``BUCKETS`` and served by :class:`kiln.runtime.Runtime` in this process, under the open-loop
(Poisson) load of ``benchmarks/runtime.py`` (its ``runtime_parts``): the same one-row request pool
(real example images; random images for ResNet-50), the same swap soak and the same fault run.

* ``runtime``: dynamic batching (``max_batch_size`` 32) against one request per run (the same
  runtime with ``max_batch_size=1``), with 1 and 2 instances, each pair of sweeps repeated
  ``repeats`` times. The two modes step through their own rising rates, interleaved: first short
  *coarse* steps (factor 1.5) that only find where p99 leaves the bounds, then *fine* steps
  (factor 1.15, ``step_s`` measured seconds each) from below the smaller bound's edge until two in
  a row miss the larger bound. For each p99 bound (5 and 10 ms) a mode's capacity is the highest
  throughput it served in a fine step with p99 within the bound and no failure; the ratio of the
  two capacities is the batching gain (target >= 3x).
* ``runtime-swaps``: a fixed rate while a new version (the same graph with other weights, a weight
  refit into the backend's standby engine) is loaded every ``swap_every_s``; the p99 of requests
  in swap windows against steady p99 (target <= 1.25x, no failed request), once with the warm-up
  on every bucket and once on batch 1. Then one transient ``EngineFailed`` every 0.5 s at a low
  rate: the latency it adds (target <= 10 ms).

``--smoke`` runs the tiny CNN with ``compile=eager``, short steps and loose bounds (also on a
CPU-only machine). Every step, sweep ratio, soak and fault run is a record in ``results.jsonl``;
the full step and soak results (histograms, windows, markers) go to ``<stage>-detail.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import _kiln
from _report_runtime import BATCHING_TARGET, FAULT_TARGET_MS, SWAP_TARGET
from _stages import Context

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runtime_parts import NUM_VERSIONS, Prepared, _serving, fault_run, request_pool, swap_soak

from kiln.bench import OpenLoop, RequestPool, RuntimeTarget, SoakResult, StepResult, run_open
from kiln.compile.artifact import write_manifest
from kiln.compile.backends.base import EngineArtifact
from kiln.compile.backends.torch import TorchBackend
from kiln.compile.spec import BuildSpec
from kiln.model.load import load_model
from kiln.runtime import BatchingConfig, FallbackConfig, ModelConfig, Runtime, VersionPolicy

BATCHED = "batching"
SINGLE = "one per run"
WARMUPS: dict[str, tuple[int, ...] | None] = {"warm-up on every bucket": None, "warm-up on batch 1": (1,)}


@dataclass(frozen=True)
class Plan:
    """How big to run: engine buckets, batching, the rate ladder, the soak and the fault run."""

    size: str
    buckets: tuple[int, ...]
    delay_us: int
    bounds_ms: tuple[float, ...]
    instances: tuple[int, ...]
    repeats: int
    start_rate: float
    coarse_factor: float
    coarse_s: float
    fine_factor: float
    step_s: float
    warmup_s: float
    max_rate: float
    swap_rate: float
    swaps: int
    swap_every_s: float
    fault_rate: float
    fault_s: float
    budget_s: float
    """Seconds after the stage's start past which no new sweep or soak is begun."""
    options: tuple[tuple[str, str], ...] = ()


FULL = Plan(
    size="full",
    buckets=(1, 2, 4, 8, 16, 32),
    delay_us=1000,
    bounds_ms=(5.0, 10.0),
    instances=(1, 2),
    repeats=2,
    start_rate=250.0,
    coarse_factor=1.5,
    coarse_s=1.5,
    fine_factor=1.15,
    step_s=4.0,
    warmup_s=0.5,
    max_rate=50_000.0,
    swap_rate=1500.0,
    swaps=40,
    swap_every_s=2.0,
    fault_rate=200.0,
    fault_s=15.0,
    budget_s=420.0,
)
SMOKE = Plan(
    size="tiny",
    buckets=(1, 2, 4, 8),
    delay_us=2000,
    bounds_ms=(50.0, 100.0),
    instances=(1,),
    repeats=1,
    start_rate=50.0,
    coarse_factor=2.0,
    coarse_s=0.3,
    fine_factor=1.3,
    step_s=0.4,
    warmup_s=0.1,
    max_rate=200.0,
    swap_rate=50.0,
    swaps=2,
    swap_every_s=0.5,
    fault_rate=50.0,
    fault_s=1.0,
    budget_s=600.0,
    options=(("compile", "eager"),),
)


PREFIX = "runtime."


def plan_for(smoke: bool, options: Sequence[tuple[str, str]]) -> Plan:
    """``SMOKE`` or ``FULL`` with the overrides among ``options`` named ``runtime.<field>``
    (``--option runtime.swap_rate=2000``, ``--option runtime.instances=1,2``); ``SystemExit``
    naming the fields for an unknown one."""
    plan = SMOKE if smoke else FULL
    changes: dict[str, Any] = {}
    for name, value in options:
        if not name.startswith(PREFIX):
            continue
        field = name.removeprefix(PREFIX)
        current = getattr(plan, field, None)
        if current is None or field == "options":
            raise SystemExit(
                f"unknown runtime plan field {field!r} in --option {name}; fields: {sorted(vars(plan))}"
            )
        if isinstance(current, tuple):
            kind = type(current[0])
            changes[field] = tuple(kind(v) for v in value.split(","))
        else:
            changes[field] = type(current)(value)
    return replace(plan, **changes)


def backend_options(options: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((n, v) for n, v in options if not n.startswith(PREFIX))


# -- the rate ladder (pure) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One measured step of a mode: its phase (``coarse``/``fine``), offered rate, and whether its
    p99 stayed within the smaller and the larger bound with no failure."""

    phase: str
    rate: float
    within_small: bool
    within_large: bool


def next_step(history: Sequence[Point], plan: Plan) -> tuple[str, float] | None:
    """The next (phase, rate) of a mode after ``history``, or ``None`` when its sweep is done.

    Coarse steps rise by ``coarse_factor`` until one misses the larger bound (or the next would
    pass ``max_rate``). Fine steps start one fine step below the last coarse rate that was within
    the smaller bound (``start_rate`` when none was) and rise by ``fine_factor`` until two in a
    row miss the larger bound or the next would pass ``max_rate``.
    """
    if not history:
        return "coarse", plan.start_rate
    fine = [p for p in history if p.phase == "fine"]
    if not fine:
        last = history[-1]
        if last.within_large and last.rate * plan.coarse_factor <= plan.max_rate:
            return "coarse", last.rate * plan.coarse_factor
        good = [p.rate for p in history if p.within_small]
        below = good[-1] if good else plan.start_rate
        return "fine", max(below / plan.fine_factor, plan.start_rate / plan.fine_factor)
    if len(fine) >= 2 and not fine[-1].within_large and not fine[-2].within_large:
        return None
    rate = fine[-1].rate * plan.fine_factor
    return None if rate > plan.max_rate else ("fine", rate)


def within(step: StepResult, bound_ms: float) -> bool:
    return step.failed == 0 and step.ok > 0 and step.summary.p99_ms <= bound_ms


def capacity(steps: Sequence[tuple[str, StepResult]], bound_ms: float) -> StepResult | None:
    """The fine step with the highest served throughput within ``bound_ms`` (no failure)."""
    good = [s for phase, s in steps if phase == "fine" and within(s, bound_ms)]
    return max(good, key=lambda s: s.throughput_per_s, default=None)


# -- models and engines ----------------------------------------------------------------------------


@dataclass
class Subject:
    """The served model: its ONNX files (one per weights seed), request pool and output name."""

    name: str
    onnx: list[Path]
    pool: RequestPool


def subject(ctx: Context, model: str, plan: Plan) -> Subject:
    if model == "cnn":
        from kiln import examples

        paths = [
            examples.build_model("cnn", ctx.work / f"cnn-seed{s}.onnx", size=plan.size, seed=s)  # type: ignore[arg-type]
            for s in range(NUM_VERSIONS)
        ]
        return Subject("cnn", paths, request_pool("cnn", plan.size))
    import torch
    from _models import export_onnx, resnet50

    paths = []
    for seed in range(NUM_VERSIONS):
        net, _ = resnet50(seed, ctx.device)
        example = torch.randn(2, 3, 224, 224, device=ctx.device)
        paths.append(export_onnx(net, ctx.work / f"resnet50-seed{seed}.onnx", example, "image", "logits"))
        del net
    inputs = load_model(paths[0]).inputs
    return Subject("resnet50", paths, RequestPool.random(inputs, batch_size=1, count=16, seed=3))


def engines(ctx: Context, subj: Subject, plan: Plan, backend: TorchBackend) -> list[EngineArtifact]:
    """Version 0 built (cold compile), versions 1.. refitted from it (new weights, same cache)."""
    source = load_model(subj.onnx[0], op_support=backend.op_support())
    options = (
        ("buckets", ",".join(map(str, plan.buckets))),
        *plan.options,
        *backend_options(ctx.extra_options),
    )
    spec = BuildSpec(
        precision="fp16", max_batch_size=max(plan.buckets), backend="torch", backend_options=options
    )
    artifacts = [
        _kiln.build(ctx.record, subj.name, backend, source=source, spec=spec, folder=ctx.work / "engine-v0")
    ]
    for seed, path in enumerate(subj.onnx[1:], start=1):
        other = load_model(path, op_support=backend.op_support())
        folder = ctx.work / f"engine-v{seed}"
        started = time.perf_counter()
        output = backend.refit(artifacts[0], other, folder)
        seconds = time.perf_counter() - started
        artifacts.append(
            write_manifest(
                folder,
                key=artifacts[0].manifest.key,
                source=other,
                spec=spec,
                target=backend.target(),
                output=output,
                build_seconds=seconds,
            )
        )
        ctx.record(
            "refit", model=subj.name, what=f"artifact for weights seed {seed}", seconds=round(seconds, 3)
        )
    return artifacts


def model_config(
    plan: Plan, *, instances: int, max_batch: int, warmup: tuple[int, ...] | None = None
) -> ModelConfig:
    preferred = tuple(b for b in plan.buckets if 1 < b <= max_batch)
    return ModelConfig(
        num_instances=instances,
        batching=BatchingConfig(
            max_batch_size=max_batch,
            max_queue_delay_us=plan.delay_us if max_batch > 1 else 0,
            preferred_batch_sizes=preferred,
            max_queue_size=4096,
        ),
        fallback=FallbackConfig(probe_in_background=False),
        versions=VersionPolicy(max_loaded_versions=1, drain_timeout_s=30.0, warmup_batch_sizes=warmup),
    )


# -- batching vs one per run -------------------------------------------------------------------------


def _summary(step: StepResult) -> dict[str, Any]:
    s = step.summary
    split = step.split
    return {
        "rate": step.rate_per_s,
        "served_per_s": round(step.throughput_per_s, 1),
        "ok": step.ok,
        "failed": step.failed,
        "p50_ms": round(s.p50_ms, 3),
        "p99_ms": round(s.p99_ms, 3),
        "max_ms": round(s.max_ms, 3),
        "queue_mean_ms": None if split is None else round(split.queue_mean_ms, 3),
        "compute_mean_ms": None if split is None else round(split.compute_mean_ms, 3),
    }


async def sweep(
    ctx: Context, prepared: Prepared, plan: Plan, *, instances: int, repeat: int, detail: list[Any]
) -> None:
    """One pair of interleaved ladders (batching, one per run), then their capacities and ratios."""
    runtimes: dict[str, Runtime] = {
        BATCHED: await _serving(
            prepared, model_config(plan, instances=instances, max_batch=max(plan.buckets))
        ),
        SINGLE: await _serving(prepared, model_config(plan, instances=instances, max_batch=1)),
    }
    history: dict[str, list[Point]] = {mode: [] for mode in runtimes}
    steps: dict[str, list[tuple[str, StepResult]]] = {mode: [] for mode in runtimes}
    small, large = min(plan.bounds_ms), max(plan.bounds_ms)
    seed = 10 * repeat + instances
    active = set(runtimes)
    while active:
        for mode, runtime in runtimes.items():
            if mode not in active:
                continue
            nxt = next_step(history[mode], plan)
            if nxt is None:
                active.discard(mode)
                continue
            phase, rate = nxt
            seconds = plan.coarse_s if phase == "coarse" else plan.step_s
            spec = OpenLoop(round(rate, 1), seconds, plan.warmup_s, seed=seed)
            step = await run_open(RuntimeTarget(runtime, prepared.name), prepared.pool, spec)
            history[mode].append(Point(phase, rate, within(step, small), within(step, large)))
            steps[mode].append((phase, step))
            ctx.record(
                "runtime-step",
                model=prepared.name,
                instances=instances,
                repeat=repeat,
                mode=mode,
                phase=phase,
                **_summary(step),
            )
            detail.append(
                {
                    "instances": instances,
                    "repeat": repeat,
                    "mode": mode,
                    "phase": phase,
                    "step": step.to_json(),
                }
            )
    for runtime in runtimes.values():
        await runtime.aclose()
    for bound in plan.bounds_ms:
        best = {mode: capacity(steps[mode], bound) for mode in runtimes}
        b, s = best[BATCHED], best[SINGLE]
        ratio = b.throughput_per_s / s.throughput_per_s if b and s else None
        ctx.record(
            "runtime-ratio",
            model=prepared.name,
            instances=instances,
            repeat=repeat,
            bound_ms=bound,
            batched_per_s=None if b is None else round(b.throughput_per_s, 1),
            batched_p99_ms=None if b is None else round(b.summary.p99_ms, 3),
            single_per_s=None if s is None else round(s.throughput_per_s, 1),
            single_p99_ms=None if s is None else round(s.summary.p99_ms, 3),
            ratio=None if ratio is None else round(ratio, 3),
            met=None if ratio is None else ratio >= BATCHING_TARGET,
        )


# -- stages ----------------------------------------------------------------------------------------------


def _prepare(ctx: Context, model: str, plan: Plan, *, standby: int) -> Prepared:
    backend = TorchBackend(max_standby_per_key=standby)
    subj = subject(ctx, model, plan)
    artifacts = engines(ctx, subj, plan, backend)
    check(ctx, subj, artifacts, backend, chunk=max(plan.buckets))
    return Prepared(subj.name, artifacts, subj.pool, backend=backend)


def check(
    ctx: Context, subj: Subject, artifacts: Sequence[EngineArtifact], backend: TorchBackend, *, chunk: int
) -> None:
    """Versions 0 and 1 (the refit) against ONNX Runtime fp32 on the pool's inputs; version 1 must
    also differ from version 0's reference (its weights were really replaced)."""
    import numpy as np
    import onnxruntime as ort

    names = list(subj.pool[0])
    feeds = {n: np.concatenate([np.asarray(p[n]) for p in subj.pool.payloads]) for n in names}
    references = []
    for path in subj.onnx[:2]:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        references.append(session.run(None, feeds)[0])
    for version in (0, 1):
        engine = backend.load(artifacts[version])
        inst = engine.create_instance()
        got = next(iter(_kiln.run_chunks(inst, feeds, chunk).values()))
        inst.close()
        engine.close()
        path = engine.load_report.get("path")
        _kiln.check(
            ctx.record,
            subj.name,
            f"v{version} fp16 engine vs ONNX Runtime fp32 v{version}",
            got,
            references[version],
            load_path=path,
        )
        if version == 1:
            _kiln.check(ctx.record, subj.name, "v1 engine vs v0 reference (must differ)", got, references[0])


def _write_detail(ctx: Context, detail: dict[str, Any]) -> None:
    path = ctx.out / f"{ctx.stage}-detail.json"
    path.write_text(json.dumps(detail, default=str))


def run(ctx: Context, model: str = "cnn") -> None:
    """Stage ``runtime``: batching vs one request per run, per instance count and repeat."""
    started = time.perf_counter()
    plan = plan_for(ctx.smoke, ctx.extra_options)
    logging.getLogger("kiln.runtime").setLevel(logging.ERROR)
    # Two standby engines: the batching and the one-per-run runtimes each take one back per sweep.
    prepared = _prepare(ctx, model, plan, standby=2)
    ctx.record("runtime-plan", model=prepared.name, plan=plan.__dict__)
    steps: list[Any] = []
    rounds = [(n, r) for r in range(1, plan.repeats + 1) for n in plan.instances]
    for instances, repeat in rounds:
        if time.perf_counter() - started > plan.budget_s:
            ctx.record(
                "runtime-skipped",
                model=prepared.name,
                instances=instances,
                repeat=repeat,
                reason=f"stage budget of {plan.budget_s:g} s spent",
            )
            continue
        asyncio.run(sweep(ctx, prepared, plan, instances=instances, repeat=repeat, detail=steps))
        _write_detail(ctx, {"plan": plan.__dict__, "steps": steps})


def run_swaps(ctx: Context, model: str = "cnn") -> None:
    """Stage ``runtime-swaps``: hot swaps under load (both warm-up policies), then the fault run."""
    started = time.perf_counter()
    plan = plan_for(ctx.smoke, ctx.extra_options)
    logging.getLogger("kiln.runtime").setLevel(logging.ERROR)  # injected faults log a warning each
    prepared = _prepare(ctx, model, plan, standby=1)
    backend: TorchBackend = prepared.backend  # type: ignore[assignment]
    ctx.record("runtime-plan", model=prepared.name, plan=plan.__dict__)
    soaks: dict[str, Any] = {}

    def park() -> None:
        """While version 0 serves, park a spare engine so that even the first swap is a refit."""
        begun = time.perf_counter()
        backend.prepare_standby(prepared.artifacts[0], num_instances=1)
        ctx.record(
            "standby",
            model=prepared.name,
            seconds=round(time.perf_counter() - begun, 3),
            held_bytes=backend.standby.held_bytes(),
        )

    for variant, sizes in WARMUPS.items():
        if time.perf_counter() - started > plan.budget_s:
            ctx.record("runtime-skipped", model=prepared.name, variant=variant, reason="stage budget spent")
            continue
        config = model_config(plan, instances=1, max_batch=max(plan.buckets), warmup=sizes)
        soak = asyncio.run(
            swap_soak(
                prepared,
                config,
                rate=plan.swap_rate,
                swaps=plan.swaps,
                every_s=plan.swap_every_s,
                before_load=park,
            )
        )
        ctx.record("runtime-swaps", model=prepared.name, variant=variant, **swap_summary(soak, plan))
        soaks[variant] = soak.to_json()
        _write_detail(ctx, {"plan": plan.__dict__, "soaks": soaks})
    config = model_config(plan, instances=1, max_batch=max(plan.buckets))
    fault = asyncio.run(fault_run(prepared, config, rate=plan.fault_rate, duration_s=plan.fault_s))
    ctx.record(
        "runtime-fault",
        model=prepared.name,
        rate=fault.rate,
        faults=fault.faults,
        retried=fault.retried.count,
        clean=fault.clean.count,
        failed=fault.failed,
        clean_p50_ms=round(fault.clean.percentile_ms(50), 3),
        retried_p50_ms=round(fault.retried.percentile_ms(50), 3),
        clean_overhead_p50_ms=round(fault.clean_overhead.percentile_ms(50), 3),
        retried_overhead_p50_ms=round(fault.retried_overhead.percentile_ms(50), 3),
        retried_overhead_max_ms=round(fault.retried_overhead.max_ns / 1e6, 3),
        added_p50_ms=round(fault.added_p50_ms, 3),
        added_max_ms=round(fault.added_max_ms, 3),
        met=fault.retried.count > 0 and fault.added_max_ms <= FAULT_TARGET_MS and fault.failed == 0,
    )


def swap_summary(soak: SoakResult, plan: Plan) -> dict[str, Any]:
    steady, swap = soak.phases.get("steady"), soak.phases.get("swap")
    loads = [m for m in soak.markers if m.kind == "load-start"]
    released = [m for m in soak.markers if m.kind == "released"]
    fields: dict[str, Any] = {
        "rate": soak.step.rate_per_s,
        "every_s": plan.swap_every_s,
        "loads": len(loads),
        "swaps": len(released),
        "ok": soak.step.ok,
        "failed": soak.step.failed,
        "served_per_s": round(soak.step.throughput_per_s, 1),
        "load_failures": [m.label for m in soak.markers if m.kind == "failed"],
    }
    if steady is not None and swap is not None:
        ratio = swap.summary.p99_ms / steady.summary.p99_ms if steady.summary.p99_ms else float("inf")
        fields.update(
            steady_ok=steady.ok,
            swap_ok=swap.ok,
            steady_p50_ms=round(steady.summary.p50_ms, 3),
            steady_p99_ms=round(steady.summary.p99_ms, 3),
            swap_p50_ms=round(swap.summary.p50_ms, 3),
            swap_p99_ms=round(swap.summary.p99_ms, 3),
            swap_max_ms=round(swap.summary.max_ms, 3),
            ratio=round(ratio, 3),
            met=ratio <= SWAP_TARGET and soak.step.failed == 0,
        )
    return fields


def stage_runner(stage: str) -> Callable[[Context], None] | None:
    """The function of a runtime stage name, or ``None`` for other stages."""
    model = "resnet50" if stage.endswith("-resnet50") else "cnn"
    base = stage.removesuffix("-resnet50")
    if base == "runtime":
        return lambda ctx: run(ctx, model)
    if base == "runtime-swaps":
        return lambda ctx: run_swaps(ctx, model)
    return None


__all__ = ["FULL", "SMOKE", "Plan", "Point", "capacity", "next_step", "stage_runner"]
