"""``kiln demo online``: the online-learning loop in one command, with its report.

A fresh model repository with version 1 of the ``ctr`` example, ``kiln serve --feedback`` and
``kiln train`` as child processes, clients sending requests at a steady rate and each answer's
click (from a click stream whose users' interests drift) back as feedback. At the end: the report
in the terminal, ``OUT/report.md``, ``OUT/report.png`` and ``OUT/report.json`` (see
:mod:`kiln.online.report`). Exit codes: 0 done, 2 bad options, 1 anything else (a child process
that failed, with its output's tail).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kiln.cli._shell import run_guarded

DEFAULT_OUT = Path(".kiln") / "demo-online"


def online_command(
    *,
    duration_s: Annotated[float, typer.Option("--duration", help="Seconds of traffic.")] = 120.0,
    rate: Annotated[float, typer.Option(help="Requests per second, all clients together.")] = 100.0,
    out: Annotated[
        Path, typer.Option("--out", help="Output folder: repository, engine cache, logs, report.")
    ] = DEFAULT_OUT,
    clients: Annotated[int, typer.Option(help="Client threads sending requests and feedback.")] = 4,
    every_s: Annotated[float, typer.Option(help="The trainer exports a version this often (seconds).")] = 2.0,
    size: Annotated[str, typer.Option(help="The ctr example's size: tiny or full.")] = "tiny",
) -> None:
    """Run the whole online loop locally (drifting click stream, clients under steady load, the
    trainer, the server with its gate) and report: versions swapped, requests served and failed,
    p50/p99 per 10 s window with swap markers, AUC of the live model vs a frozen version 1, and
    the build path per version."""
    from kiln.online.report import plot_report, render_markdown, render_terminal, summarize  # noqa: PLC0415
    from kiln.online.run import LoopConfig, run_loop  # noqa: PLC0415

    config = run_guarded(
        partial(
            LoopConfig, duration_s=duration_s, rate_per_s=rate, clients=clients, every_s=every_s, size=size
        )
    )
    err = Console(stderr=True)
    last = [-1]

    def progress(done: float, message: str) -> None:
        step = int(done * 10)
        if step != last[0]:
            last[0] = step
            err.print(f"[{done:4.0%}] {message}", markup=False, highlight=False)

    result = run_guarded(partial(run_loop, config, out, progress=progress))
    report = summarize(result)
    figure = plot_report(report, out / "report.png", started_s=result.started_s)
    (out / "report.md").write_text(render_markdown(report, figure=figure.name))
    (out / "report.json").write_text(json.dumps(report.to_json(), indent=2))
    render_terminal(report, Console(width=max(Console().width, 100)))
    typer.echo(f"Report: {out / 'report.md'} (figure {figure}, numbers {out / 'report.json'})")
