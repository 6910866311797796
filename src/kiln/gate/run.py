"""``run_gate``: build the candidate, measure it, decide every check, publish on success.

The order: connect to the served version first (a server that is not there, or a model it does
not serve, fails fast as bad input), build through the engine cache (timed), then the accuracy
checks, the load (p99 and speedup) and the build time. Measurements that fail (every request of a
load step erroring, a signature that differs) become failed checks, and the gate goes on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import replace
from pathlib import Path

from kiln.bench.peers.ort import signature
from kiln.cache.builder import BuildReport
from kiln.cache.pipeline import BuildRequest, build_engine
from kiln.compile.backends.base import Engine, LoadOptions
from kiln.compile.data import SampleSet, load_samples
from kiln.compile.registry import create_backend
from kiln.compile.spec import BuildSpec
from kiln.errors import ModelNotFound
from kiln.gate.checks import (
    CheckResult,
    accuracy_check,
    accuracy_drop_check,
    build_time_check,
    p99_check,
    signature_check,
    skipped,
    speedup_check,
)
from kiln.gate.config import GateConfig
from kiln.gate.measure import LoadMeasurements, engine_outputs, measure_load, request_pool
from kiln.gate.report import GateReport, release_tag
from kiln.gate.served import RepositoryModel, ServedModel, ServerModel
from kiln.repository.publish import model_files, publish_version

Say = Callable[[str], None]
GATE_FILE = "kiln-gate.json"
"""Written into a published version beside the model: the gate report that let it through."""


def open_served(config: GateConfig) -> ServedModel | None:
    """The served version to compare with: the server's model, else the repository's newest."""
    if config.served_url is not None:
        return ServerModel(config.served_url, config.served_model or config.model_name)
    if config.repo is not None and (config.repo / config.model_name).is_dir():
        with suppress(ModelNotFound):  # no complete version yet: a first release
            return RepositoryModel(config.repo, config.model_name)
    return None


def run_gate(config: GateConfig, *, say: Say | None = None) -> GateReport:
    """Run the gate ``config`` describes; the report (``passed`` says whether to release)."""
    say = say or (lambda _: None)
    served = open_served(config)
    say(f"building {config.model} ({config.precision})")
    started = time.perf_counter()
    build = build_engine(BuildRequest(model=config.model, spec=_spec(config), calibration=config.calibration,
                                      validation=config.validation, cache=config.cache_dir))  # fmt: skip
    build_s = time.perf_counter() - started
    engine = create_backend("onnxruntime").load(build.artifact, LoadOptions())
    checks = [_accuracy_vs_fp32(config, build)]
    checks += _versus_served(config, served, engine)
    say("measuring under load")
    measured = asyncio.run(measure_load(config, engine, request_pool(config, engine.inputs)))
    checks += _load_checks(config, measured)
    limit = config.thresholds.max_build_s
    checks.append(
        build_time_check("build time", build_s, limit, build.path) if limit is not None
        else skipped("build time", "<=", "s", f"{build_s:.2f} s, no --max-build-s")
    )  # fmt: skip
    report = _report(config, build, build_s, tuple(checks), served=served, measured=measured)
    if report.passed and config.publish:
        report = _publish(config, report)
    return report


def _spec(config: GateConfig) -> BuildSpec:
    return BuildSpec(precision=config.precision, task=config.task, max_batch_size=config.load.max_batch_size)


def _accuracy_vs_fp32(config: GateConfig, build: BuildReport) -> CheckResult:
    limit = config.thresholds.max_accuracy_drop
    if limit is None:
        return skipped("accuracy vs fp32", "<=", "drop", "no --max-accuracy-drop")
    return accuracy_drop_check("accuracy vs fp32", build.accuracy, limit)


def _versus_served(config: GateConfig, served: ServedModel | None, engine: Engine) -> list[CheckResult]:
    if served is None:
        return [skipped("signature vs served", "<=", "differences", "no served version given")]
    candidate = signature(config.model)
    sig = signature_check("signature vs served", candidate, served.signature())
    checks = [sig]
    limit = config.thresholds.max_drop_vs_served
    if limit is None:
        checks.append(skipped("accuracy vs served", "<=", "drop", "no --max-drop-vs-served"))
    elif not sig.passed:
        checks.append(CheckResult("accuracy vs served", None, limit, "<=", "drop", "fail",
                                  "not comparable: the signature differs from the served model"))  # fmt: skip
    elif config.validation is None:
        checks.append(CheckResult("accuracy vs served", None, limit, "<=", "drop", "fail",
                                  "no --validation samples to compare outputs on"))  # fmt: skip
    else:
        checks.append(_served_accuracy(config, served, engine, load_samples(config.validation), limit))
    return checks


def _served_accuracy(
    config: GateConfig, served: ServedModel, engine: Engine, samples: SampleSet, limit: float
) -> CheckResult:
    mine = engine_outputs(engine, samples, config.load.max_batch_size)
    theirs = served.outputs(samples)
    first = engine.outputs[0].name
    return accuracy_check("accuracy vs served", theirs[first], mine[first], task=config.task,
                          max_drop=limit, labels=samples.labels)  # fmt: skip


def _load_checks(config: GateConfig, measured: LoadMeasurements) -> list[CheckResult]:
    limits = config.thresholds
    rate = f"at {config.load.load_rate_per_s:g}/s"
    checks = [
        p99_check(f"p99 {rate}", measured.p99_step, limits.max_p99_ms) if limits.max_p99_ms is not None
        else skipped(f"p99 {rate}", "<=", "ms", f"{measured.p99_step.summary.p99_ms:.2f} ms, no --max-p99-ms")
    ]  # fmt: skip
    bound = config.speedup_bound_ms
    name = f"speedup vs unoptimized (p99 <= {bound:g} ms)"
    checks.append(
        speedup_check(name, measured.kiln, measured.baseline, limits.min_speedup)
        if limits.min_speedup is not None else skipped(name, ">=", "x", "no --min-speedup")
    )  # fmt: skip
    return checks


def _report(
    config: GateConfig,
    build: BuildReport,
    build_s: float,
    checks: tuple[CheckResult, ...],
    *,
    served: ServedModel | None,
    measured: LoadMeasurements,
) -> GateReport:
    structure = str(build.artifact.manifest.fingerprint.get("structure_hash", ""))
    return GateReport(
        model=config.model_name,
        candidate=str(config.model),
        precision=config.precision,
        tag=release_tag(config.model_name, structure, build.target_tag, config.precision),
        build={**build.to_json(), "wall_seconds": build_s, "structure_hash": structure},
        checks=checks,
        served=None if served is None else served.description,
        measurements={
            "p99_step": measured.p99_step.to_json(),
            "kiln": measured.kiln.to_json(),
            "unoptimized": measured.baseline.to_json(),
            "kiln_steps": [s.to_json() for s in measured.kiln_steps],
            "unoptimized_steps": [s.to_json() for s in measured.baseline_steps],
        },
    )


def _publish(config: GateConfig, report: GateReport) -> GateReport:
    assert config.repo is not None
    record = json.dumps(report.to_json(), indent=2, default=str).encode()
    files: dict[str, Path | bytes] = {**model_files(Path(config.model)), GATE_FILE: record}
    version = publish_version(config.repo, config.model_name, files, tag=report.tag)
    published = {
        "repo": str(config.repo),
        "version": version.version,
        "path": str(version.path),
        "tag": version.tag,
    }
    return replace(report, published=published)
