"""``kiln train``: learn from a feedback store and publish gated versions into a model repository.

Exit codes: 0 stopped (SIGINT/SIGTERM or ``--max-exports`` reached), 2 bad input (no version to
start from, an unreadable store or checkpoint), 1 anything else.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from kiln.errors import KilnError


def train_command(
    *,
    repo: Annotated[Path, typer.Argument(help="The model repository (its newest version is the start).")],
    model: Annotated[str, typer.Option(help="The served model to train.")] = "ctr",
    feedback: Annotated[
        Path | None, typer.Option(help="The feedback store (SQLite). Default: REPO/.kiln/feedback.db.")
    ] = None,
    every_samples: Annotated[int, typer.Option(help="Export after this many new samples.")] = 20_000,
    every_s: Annotated[
        float, typer.Option(help="Export after this many seconds (when anything is new).")
    ] = 10.0,
    batch_size: Annotated[int, typer.Option(help="Samples per Adam step.")] = 256,
    learning_rate: Annotated[float, typer.Option(help="Adam step size of the dense layers.")] = 1e-3,
    embedding_learning_rate: Annotated[
        float, typer.Option(help="Sparse Adam step size of the embedding rows.")
    ] = 1e-2,
    max_auc_drop: Annotated[
        float, typer.Option(help="Reject a candidate this far below the live holdout AUC.")
    ] = 0.01,
    read_events: Annotated[int, typer.Option(help="Feedback events read per step at most.")] = 4096,
    max_exports: Annotated[int | None, typer.Option(help="Stop after this many exports.")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")] = None,
) -> None:
    """Consume feedback from the last committed offset, train with Adam, publish gated versions."""
    for name, rate in (
        ("--learning-rate", learning_rate),
        ("--embedding-learning-rate", embedding_learning_rate),
    ):
        if not 0.0 < rate <= 1.0:
            typer.echo(f"{name} must be in (0, 1] (seen: {rate}); try 1e-3", err=True)
            raise typer.Exit(2)
    try:
        from prometheus_client import REGISTRY, start_http_server  # noqa: PLC0415

        from kiln.train.metrics import LoopMetrics  # noqa: PLC0415
        from kiln.train.policy import ExportPolicy  # noqa: PLC0415
        from kiln.train.trainer import TrainConfig, Trainer  # noqa: PLC0415
    except ImportError as exc:
        typer.echo(f"kiln train needs torch: pip install 'kiln[torch]' ({exc})", err=True)
        raise typer.Exit(2) from None
    config = TrainConfig(
        repo=repo,
        model=model,
        feedback=feedback or repo / ".kiln" / "feedback.db",
        batch_size=batch_size,
        learning_rate=learning_rate,
        embedding_learning_rate=embedding_learning_rate,
        policy=ExportPolicy(every_samples=every_samples, every_s=every_s),
        max_auc_drop=max_auc_drop,
        read_events=read_events,
    )
    try:
        trainer = Trainer(config)
    except KilnError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    metrics = LoopMetrics(REGISTRY)
    if metrics_port is not None:
        start_http_server(metrics_port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    observed = 0
    try:
        while not stop.is_set():
            if trainer.step() == 0:
                stop.wait(config.poll_interval_s)
            for record in trainer.history[observed:]:
                metrics.observe(model, record)
                outcome = f"published version {record.version}" if record.version else "rejected"
                typer.echo(f"offset {record.training.offset}: {outcome} ({record.gate.reason})")
            observed = len(trainer.history)
            if max_exports is not None and observed >= max_exports:
                break
    finally:
        trainer.close()
