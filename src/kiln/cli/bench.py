"""``kiln bench``: measure a KServe v2 server, or an engine in-process, under load.

Exit codes: 0 ok, 2 bad input (no server at the URL, a model it does not serve, bad options or
input files), 1 a step in which every request failed (the others still run and are reported) or
an internal error.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from kiln.bench.compare import run_with_baseline
from kiln.bench.inputs import parse_int_range
from kiln.bench.report import BenchReport, render_markdown, render_table, step_row
from kiln.bench.results import StepResult
from kiln.bench.runner import BenchPlan
from kiln.bench.setup import BenchSetup, run_setup
from kiln.errors import ConfigError, InvalidInput, KilnError, ModelNotFound, describe


class RichProgress:
    """A progress bar per step, and one line per finished step."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar = Progress(
            TextColumn("{task.description:>14}"),
            BarColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task: int | None = None

    def start_step(self, label: str, total_s: float) -> None:
        self.bar.start()
        self.task = self.bar.add_task(label, total=total_s)

    def advance(self, elapsed_s: float) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=elapsed_s)  # type: ignore[arg-type]

    def end_step(self, result: StepResult) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)  # type: ignore[arg-type]
            self.task = None
        self.bar.stop()
        row = step_row("", result)
        self.console.print(
            f"{result.label:>14}: {row[2]} ok, {row[3]} failed, {row[4]} req/s, "
            f"p50 {row[5]} ms, p99 {row[7]} ms",
            highlight=False,
        )


def _numbers(text: str | None, kind: type[int] | type[float], what: str) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        values = tuple(kind(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(
            describe(f"bad {what} list", seen=text, fix="comma-separated numbers, e.g. 1,4,16")
        ) from None
    return values


def bench(
    *,
    url: Annotated[str | None, typer.Option(help="KServe v2 server, e.g. http://127.0.0.1:8000.")] = None,
    protocol: Annotated[str, typer.Option(help="http or grpc.")] = "http",
    model: Annotated[str | None, typer.Option(help="Model name (required with --url).")] = None,
    engine: Annotated[
        Path | None,
        typer.Option(help="Run in-process: an ONNX model (built through the cache) or an artifact folder."),
    ] = None,
    mode: Annotated[
        str, typer.Option(help="In-process: runtime (dynamic batching) or engine (one per run).")
    ] = "runtime",
    instances: Annotated[int, typer.Option(help="In-process execution instances.")] = 1,
    max_batch_size: Annotated[
        int, typer.Option(help="In-process runtime: rows per engine run at most.")
    ] = 32,
    max_queue_delay_us: Annotated[
        int, typer.Option(help="In-process runtime: longest wait for a batch.")
    ] = 1000,
    dispatch_when_idle: Annotated[
        bool, typer.Option(help="In-process runtime: run at once when no batch is running.")
    ] = True,
    precision: Annotated[str, typer.Option(help="In-process build precision: fp32, fp16 or bf16.")] = "fp32",
    cache_dir: Annotated[Path | None, typer.Option(help="Engine cache folder.")] = None,
    concurrency: Annotated[str | None, typer.Option(help="Closed-loop steps, e.g. 1,4,16.")] = None,
    rate: Annotated[str | None, typer.Option(help="Open-loop steps in requests/s, e.g. 200,500.")] = None,
    duration_s: Annotated[float, typer.Option(help="Measured seconds per step.")] = 10.0,
    warmup_s: Annotated[float, typer.Option(help="Unmeasured seconds before each step.")] = 1.0,
    soak_s: Annotated[float | None, typer.Option(help="Seconds of a fixed-rate soak at the end.")] = None,
    soak_rate: Annotated[float | None, typer.Option(help="The soak's rate (default: last --rate).")] = None,
    inputs: Annotated[
        Path | None, typer.Option(help=".npz file or folder of samples (default: random).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per request.")] = 1,
    int_range: Annotated[
        str, typer.Option(help="Random integer inputs in LOW:HIGH (high excluded).")
    ] = "0:100",
    seed: Annotated[int, typer.Option(help="Seed of arrivals and random inputs.")] = 0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON here.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the report as Markdown here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write PNG plots here (soaks beside it).")] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            help="Also measure 'unoptimized' (the --engine model: fp32, no graph optimizations, "
            "one request per run) and record kiln's efficiency factor in the engine's manifest."
        ),
    ] = None,
    slo_ms: Annotated[
        float, typer.Option(help="With --baseline: the p99 bound (ms) both throughputs are taken at.")
    ] = 50.0,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Measure throughput and latency percentiles under load: closed-loop concurrency sweeps,
    open-loop (Poisson) rates, and a soak with latency over time."""
    err = Console(stderr=True)

    def setup() -> BenchSetup:
        steps = _numbers(concurrency, int, "concurrency")
        rates = _numbers(rate, float, "rate")
        plan = BenchPlan(
            concurrency=tuple(int(c) for c in steps) if (steps or rates or soak_s) else (1,),
            rates_per_s=rates,
            duration_s=duration_s,
            warmup_s=warmup_s,
            soak_s=soak_s,
            soak_rate_per_s=soak_rate,
            seed=seed,
        )
        return BenchSetup(
            url=url, protocol=protocol, engine=engine, model=model, mode=mode,  # type: ignore[arg-type]
            num_instances=instances, max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us,
            dispatch_when_idle=dispatch_when_idle,
            precision=precision, cache_dir=cache_dir, inputs=inputs, batch_size=batch_size,  # type: ignore[arg-type]
            int_range=parse_int_range(int_range), seed=seed, plan=plan,
        )  # fmt: skip

    try:
        config = setup()
        progress = None if quiet else RichProgress(err)
        report = asyncio.run(_measure(config, baseline, slo_ms, progress))
    except (ConfigError, ModelNotFound, InvalidInput) as error:
        err.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KilnError as error:
        err.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    _write(report, json_path, markdown, plot)
    console = Console()
    render_table(report, console if console.is_terminal else Console(width=200))
    failed = report.failed_steps
    if failed:
        names = ", ".join(f"{name} {step.label}" for name, step in failed)
        err.print(f"error: every request failed in {len(failed)} step(s): {names}", highlight=False)
        raise typer.Exit(1)


async def _measure(
    setup: BenchSetup, baseline: str | None, slo_ms: float, progress: RichProgress | None
) -> BenchReport:
    if baseline is None:
        return await run_setup(setup, progress=progress)
    if baseline != "unoptimized":
        raise ConfigError(describe("unknown --baseline", seen=baseline, fix="use --baseline unoptimized"))
    report, efficiency = await run_with_baseline(setup, bound_ms=slo_ms, progress=progress)
    Console(stderr=True).print(efficiency.note(), highlight=False)
    return report


def _write(report: BenchReport, json_path: Path | None, markdown: Path | None, plot: Path | None) -> None:
    if json_path is not None:
        report.write_json(json_path)
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        tmp = markdown.with_name(f".{markdown.name}.tmp")
        tmp.write_text(render_markdown(report))
        tmp.replace(markdown)
    if plot is not None:
        from kiln.bench.plots import write_plots  # noqa: PLC0415 - matplotlib only when plotting

        write_plots(report, plot)
