"""``kiln demo``: generate the example models, build their engines through the cache, show how.

For each example (``ctr``, ``cnn``, ``ranker``): an fp32 engine, an int8 engine (the example's
recipe, :mod:`kiln.examples.recipes`), then a weight-only retrain (the same graph with seed-1
weights) built again in int8, which reuses the stored calibration ranges and re-checks accuracy.
Everything lives in one work folder (``./.kiln/demo`` by default): the models, their samples and
the engine cache, so a second run finds every engine in the cache. Then the example model
repository (``WORK/repo``, :mod:`kiln.cli.demo_serve`) is written and served with ``kiln serve``'s
stack, its int8 engines taken from the same cache; ``--no-serve`` stops before serving.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from kiln.cache.builder import BuildReport
from kiln.cache.pipeline import BuildRequest, build_engine
from kiln.cli._report import NOT_MEASURED, drop_text, human_bytes, report_json, task_figure, wide_console
from kiln.cli._shell import progress_bar, run_guarded
from kiln.cli.demo_serve import client_commands, write_repository
from kiln.cli.serve import print_banner
from kiln.compile.spec import Precision
from kiln.examples import EXAMPLES, Size, build_model, get_example, write_samples
from kiln.examples.recipes import INT8_RECIPES, build_spec
from kiln.server.config import ServerConfig, server_config

if TYPE_CHECKING:
    from kiln.server.serve import RunningServer

DEFAULT_DIR = Path(".kiln") / "demo"
RETRAIN_SEED = 1
_STAMP = "generated.json"


@dataclass(frozen=True)
class DemoStep:
    """One build of the demo: which example, which weights, which precision."""

    example: str
    precision: Precision
    retrained: bool


@dataclass(frozen=True)
class DemoRow:
    step: DemoStep
    report: BuildReport
    seconds: float


def demo_steps(names: list[str]) -> list[DemoStep]:
    """fp32, int8, then the retrained model in int8, per example."""
    plan: tuple[tuple[Precision, bool], ...] = (("fp32", False), ("int8", False), ("int8", True))
    return [DemoStep(name, precision, retrained) for name in names for precision, retrained in plan]


def prepare_example(root: Path, name: str, size: Size) -> Path:
    """Write ``root/name/``: the model, calibration and validation samples, and the retrained
    model with its own validation samples. Skipped when a stamp says it is there already."""
    folder = root / name
    stamp = {"name": name, "size": size, "retrain_seed": RETRAIN_SEED}
    if (folder / _STAMP).is_file() and json.loads((folder / _STAMP).read_text()) == stamp:
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    spec = get_example(name)
    model = build_model(name, folder / f"{name}.onnx", size=size)
    write_samples(name, folder / "calibration", count=spec.num_calibration, size=size, model=model)
    write_samples(
        name, folder / "validation", count=spec.num_validation, kind="validation", size=size, model=model
    )
    retrained = build_model(name, folder / "retrained" / f"{name}.onnx", size=size, seed=RETRAIN_SEED)
    write_samples(
        name,
        folder / "retrained" / "validation",
        count=spec.num_validation,
        kind="validation",
        size=size,
        seed=RETRAIN_SEED,
        model=retrained,
    )
    (folder / _STAMP).write_text(json.dumps(stamp))
    return folder


def run_step(root: Path, step: DemoStep, size: Size, cache: Path, console: Console | None) -> DemoRow:
    folder = root / step.example
    weights = folder / "retrained" if step.retrained else folder
    recipe = INT8_RECIPES[step.example]
    bound = recipe.max_accuracy_drop if step.precision == "int8" else None
    started = time.perf_counter()
    with progress_bar(enabled=console is not None) as progress:
        report = build_engine(
            BuildRequest(
                model=weights / f"{step.example}.onnx",
                spec=build_spec(step.example, step.precision, size=size, max_accuracy_drop=bound),
                calibration=folder / "calibration",
                validation=weights / "validation",
                cache=cache,
                progress=progress,
            )
        )
    return DemoRow(step, report, time.perf_counter() - started)


def demo_command(
    ctx: typer.Context,
    *,
    work_dir: Annotated[
        Path, typer.Option("--dir", help="Work folder: models, samples, engine cache.")
    ] = DEFAULT_DIR,
    size: Annotated[Size, typer.Option(help="Example size: full (what the name says) or tiny.")] = "full",
    only: Annotated[list[str] | None, typer.Option(help="Only these examples (repeatable).")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Empty the demo's engine cache first.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for machines instead of a table.")
    ] = False,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve the example repository afterwards.")
    ] = True,
    host: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="HTTP port (0: any free port).")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port (0: any free port).")] = 8001,
) -> None:
    """Generate the example models, build their engines (fp32, int8, and an int8 weight-only
    update) through the engine cache and print the build report; then write the example model
    repository (WORK/repo) and serve it over KServe v2 HTTP and gRPC until Ctrl-C (--no-serve: stop
    after writing it). `kiln demo online`: the online-learning loop instead."""
    if ctx.invoked_subcommand is not None:
        return
    names = list(only or EXAMPLES)
    run_guarded(partial(_check_names, names), as_json=as_json)
    cache = work_dir / "engines"
    if fresh and cache.exists():
        shutil.rmtree(cache)
    console = None if as_json else Console(stderr=True)
    rows: list[DemoRow] = []
    for name in names:
        if console:
            console.print(f"preparing {name} ({size}) in {work_dir / name}")
        run_guarded(partial(prepare_example, work_dir, name, size), as_json=as_json)
        for step in demo_steps([name]):
            if console:
                console.print(f"building {_label(step)}")
            rows.append(run_guarded(partial(run_step, work_dir, step, size, cache, console), as_json=as_json))
    repo = run_guarded(partial(write_repository, work_dir, names, size), as_json=as_json)
    if as_json:
        data = [{"step": _label(r.step), "seconds": r.seconds, **report_json(r.report)} for r in rows]
        typer.echo(json.dumps(data, indent=2))
    else:
        print_rows(rows, cache)
        typer.echo(f"Example model repository: {repo}")
    if serve:
        settings = {"host": host, "http_port": http_port, "grpc_port": grpc_port}
        serve_demo(repo, cache, run_guarded(partial(server_config, **settings)), names[0])


def serve_demo(repo: Path, cache: Path, config: ServerConfig, model: str) -> None:
    """Serve ``repo`` (engines from ``cache``) until SIGTERM/Ctrl-C; print how to call it."""
    from kiln.server.serve import serve_repository  # noqa: PLC0415 (the server stack loads here)

    def commands(server: RunningServer) -> None:
        print("Try it:", flush=True)
        for line in client_commands(server.http_url, server.grpc_url, repo, model):
            print(f"  {line}", flush=True)
        print("Stop with Ctrl-C.", flush=True)

    started = partial(print_banner, then=commands)
    options = {"cache_dir": cache, "settle_s": 0.5}
    drained = run_guarded(partial(serve_repository, repo, config, repository=options, on_started=started))
    if not drained:
        raise typer.Exit(1)


def _check_names(names: list[str]) -> None:
    for name in names:
        get_example(name)


def _label(step: DemoStep) -> str:
    weights = f"retrained (seed {RETRAIN_SEED})" if step.retrained else "seed 0"
    return f"{step.example} {step.precision}, {weights}"


def print_rows(rows: list[DemoRow], cache: Path) -> None:
    table = Table(title=f"kiln demo: engines in {cache}", title_justify="left")
    columns = ("model", "weights", "precision", "path taken", "build s", "size", "accuracy vs fp32", "drop")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        accuracy = row.report.accuracy
        table.add_row(
            row.step.example,
            f"seed {RETRAIN_SEED}" if row.step.retrained else "seed 0",
            row.step.precision,
            row.report.path,
            f"{row.report.build_seconds:.2f}",
            human_bytes(row.report.engine_size_bytes),
            task_figure(accuracy) if accuracy else NOT_MEASURED,
            drop_text(accuracy, label="") if accuracy else "-",
        )
    console = wide_console()
    console.print(table)
    console.print(
        f"Run it again: every engine is a cache hit. `kiln cache ls --cache-dir {cache}` lists them."
    )
