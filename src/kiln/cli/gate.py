"""``kiln gate MODEL``: the release gate. Build the candidate, check it, publish it on success.

Exit codes: 0 every check passed (and the candidate was published when asked), 1 a check failed
(the table and reports say which) or an internal error, 2 bad input (options, thresholds that are
not numbers a gate can use, no server at the URL, a model it does not serve, a missing file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kiln.bench.inputs import parse_int_range
from kiln.cli._report import wide_console
from kiln.cli._shell import run_guarded
from kiln.errors import ConfigError, ModelNotFound, describe
from kiln.gate.config import GateConfig, GateLoad, GateThresholds
from kiln.gate.report import GateReport, render_table
from kiln.gate.run import run_gate

_OPT = typer.Option


def _concurrency(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(
            describe("bad --concurrency", seen=text, fix="comma-separated integers, e.g. 1,4,16")
        ) from None


def gate_command(
    model: Annotated[Path, typer.Argument(help="The candidate model (.onnx).")],
    *,
    name: Annotated[str, _OPT(help="Model name (default: the file's stem).")] = "",
    precision: Annotated[str, _OPT(help="fp32, fp16, bf16 or int8.")] = "fp32",
    task: Annotated[str, _OPT(help="How accuracy is judged: none, classifier, ctr, ranker.")] = "none",
    calibration: Annotated[Path | None, _OPT(help="Calibration samples (int8).")] = None,
    validation: Annotated[
        Path | None, _OPT(help="Validation samples: accuracy checks and load payloads.")
    ] = None,
    served_url: Annotated[
        str | None, _OPT(help="Running KServe v2 server (HTTP) serving the current version.")
    ] = None,
    served_model: Annotated[str | None, _OPT(help="Its model name (default: --name).")] = None,
    repo: Annotated[Path | None, _OPT(help="Model repository: its newest version is the served one.")] = None,
    publish: Annotated[Path | None, _OPT(help="On success, publish into this model repository.")] = None,
    cache_dir: Annotated[Path | None, _OPT(help="Engine cache folder.")] = None,
    max_accuracy_drop: Annotated[
        float | None, _OPT(help="Largest accuracy drop vs the fp32 reference.")
    ] = None,
    max_drop_vs_served: Annotated[
        float | None, _OPT(help="Largest accuracy drop vs the served version.")
    ] = None,
    max_p99_ms: Annotated[float | None, _OPT(help="Largest p99 latency (ms) at --load-rate.")] = None,
    min_speedup: Annotated[
        float | None, _OPT(help="Smallest throughput ratio over the unoptimized baseline.")
    ] = None,
    max_build_s: Annotated[float | None, _OPT(help="Longest build (s).")] = None,
    load_rate: Annotated[float, _OPT(help="Open-loop rate (requests/s) of the p99 check.")] = 100.0,
    concurrency: Annotated[str, _OPT(help="Closed-loop steps of the speedup check.")] = "1,4,16",
    speedup_p99_ms: Annotated[
        float | None, _OPT(help="p99 bound of the speedup (default --max-p99-ms).")
    ] = None,
    duration_s: Annotated[float, _OPT(help="Measured seconds per load step.")] = 3.0,
    warmup_s: Annotated[float, _OPT(help="Unmeasured seconds before each load step.")] = 0.5,
    max_batch_size: Annotated[int, _OPT(help="kiln's runtime: rows per engine run at most.")] = 32,
    max_queue_delay_us: Annotated[int, _OPT(help="kiln's runtime: longest wait for a batch.")] = 1000,
    instances: Annotated[int, _OPT(help="kiln's runtime: execution instances.")] = 1,
    int_range: Annotated[str, _OPT(help="Random integer inputs LOW:HIGH without --validation.")] = "0:100",
    json_path: Annotated[Path | None, _OPT("--json", help="Write the report as JSON here.")] = None,
    junit: Annotated[Path | None, _OPT(help="Write a JUnit XML report here.")] = None,
) -> None:
    """Build a candidate model and gate its release: accuracy (vs fp32 and the served version),
    p99 latency at a load, speedup over the unoptimized baseline, build time. Exit 0 only if all pass."""
    err = Console(stderr=True)

    def config() -> GateConfig:
        thresholds = GateThresholds(
            max_accuracy_drop, max_drop_vs_served, max_p99_ms, min_speedup, max_build_s
        )
        load = GateLoad(load_rate, _concurrency(concurrency), speedup_p99_ms, duration_s, warmup_s,
                        max_batch_size, max_queue_delay_us, instances,
                        parse_int_range(int_range))  # fmt: skip
        return GateConfig(
            model, name, precision, task, calibration, validation,  # type: ignore[arg-type]
            served_url, served_model, repo or publish, publish is not None, cache_dir, thresholds, load,
        )  # fmt: skip

    gate_config = run_guarded(config)
    report = run_guarded(lambda: _gate(gate_config, err))
    _write(report, json_path, junit)
    render_table(report, wide_console())
    if report.published:
        err.print(
            f"published {report.model} version {report.published['version']} ({report.tag})", highlight=False
        )
    if not report.passed:
        raise typer.Exit(1)


def _gate(config: GateConfig, err: Console) -> GateReport:
    try:
        return run_gate(config, say=lambda text: err.print(text, highlight=False))
    except ModelNotFound as error:  # the served model named on the command line: bad input
        raise ConfigError(str(error)) from None


def _write(report: GateReport, json_path: Path | None, junit: Path | None) -> None:
    if json_path is not None:
        report.write_json(json_path)
    if junit is not None:
        report.write_junit(junit)
