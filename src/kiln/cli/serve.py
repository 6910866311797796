"""``kiln serve REPO``: serve a model repository over KServe v2 HTTP (with ``/metrics``) and gRPC.

New versions dropped into the repository are picked up, built through the engine cache and
hot-swapped (see ``docs/repository.md``). Exit codes: 0 after a graceful shutdown (SIGTERM/SIGINT)
that finished every request in flight, 1 on an internal error or when requests were cut off, 2 on
bad input (options, keys file, folder, ledger).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console

from kiln.cli._lines import say
from kiln.errors import ConfigError, KilnError, describe
from kiln.server.config import ServerConfig, server_config

if TYPE_CHECKING:
    from kiln.online.loop import OnlineGateConfig
    from kiln.server.serve import RunningServer

_FIELD_HELP = {
    "poll_interval_s": "Seconds between scans of the repository; 0 = no polling (load at start "
    "and on explicit load calls only).",
    "settle_s": "Seconds a version folder must stay unchanged before it is complete (when it has "
    "no READY file).",
    "build_in": "Where engines are built: process (a spawned worker at a lower CPU priority) or thread.",
}


def _help(field: str) -> str:
    return ServerConfig.model_fields[field].description or ""


def serve_command(
    repo: Annotated[
        Path, typer.Argument(help="Model repository folder: `MODEL/config.yaml`, `MODEL/VERSION/model.onnx`.")
    ],
    *,
    host: Annotated[str, typer.Option(help=_help("host"))] = "0.0.0.0",
    http_port: Annotated[int, typer.Option(help=_help("http_port"))] = 8000,
    grpc_port: Annotated[int, typer.Option(help=_help("grpc_port"))] = 8001,
    no_grpc: Annotated[bool, typer.Option("--no-grpc", help="Serve HTTP only.")] = False,
    workers: Annotated[int, typer.Option(help=_help("workers"))] = 1,
    api_keys_file: Annotated[Path | None, typer.Option(help=_help("api_keys_file"))] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(envvar="KILN_ADMIN_TOKEN", help=_help("admin_token") + " Env: KILN_ADMIN_TOKEN."),
    ] = None,
    max_request_bytes: Annotated[int, typer.Option(help=_help("max_request_bytes"))] = 64 << 20,
    grpc_max_message_bytes: Annotated[int, typer.Option(help=_help("grpc_max_message_bytes"))] = 64 << 20,
    drain_timeout_s: Annotated[float, typer.Option(help=_help("drain_timeout_s"))] = 30.0,
    keep_alive_s: Annotated[float, typer.Option(help=_help("keep_alive_s"))] = 5.0,
    poll_interval_s: Annotated[float, typer.Option(help=_FIELD_HELP["poll_interval_s"])] = 1.0,
    settle_s: Annotated[float, typer.Option(help=_FIELD_HELP["settle_s"])] = 1.0,
    build_in: Annotated[Literal["process", "thread"], typer.Option(help=_FIELD_HELP["build_in"])] = "process",
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Engine cache folder. Default: $KILN_CACHE_DIR, else ~/.cache/kiln/engines."),
    ] = None,
    ledger: Annotated[
        Path | None, typer.Option(help="Usage ledger (SQLite). Default: REPO/.kiln/usage.sqlite.")
    ] = None,
    feedback: Annotated[
        Path | None,
        typer.Option(
            help="Feedback store (SQLite) for the online loop: the feedback endpoints write to it and "
            "every new version must pass the holdout gate on it before it is built and served."
        ),
    ] = None,
    max_auc_drop: Annotated[
        float,
        typer.Option(
            help="With --feedback: reject a version whose holdout AUC is this far below the better "
            "of the serving and the first served version's."
        ),
    ] = 0.01,
    holdout_size: Annotated[
        int, typer.Option(help="With --feedback: the newest holdout events the gate scores.")
    ] = 2000,
    min_holdout: Annotated[
        int, typer.Option(help="With --feedback: fewer holdout events than this: finite check only.")
    ] = 200,
) -> None:
    """Serve a model repository: KServe v2 REST and gRPC, Prometheus metrics on /metrics, new
    versions picked up and hot-swapped while serving."""
    err = Console(stderr=True)
    try:
        config = server_config(
            host=host,
            http_port=http_port,
            grpc_port=None if no_grpc else grpc_port,
            workers=workers,
            api_keys_file=api_keys_file,
            admin_token=admin_token,
            max_request_bytes=max_request_bytes,
            grpc_max_message_bytes=grpc_max_message_bytes,
            drain_timeout_s=drain_timeout_s,
            keep_alive_s=keep_alive_s,
        )
        options: dict[str, object] = {
            "poll_interval_s": poll_interval_s,
            "settle_s": settle_s,
            "build_in": build_in,
            "cache_dir": cache_dir,
        }
        if config.workers > 1:
            if feedback is not None:
                raise ConfigError(
                    describe(
                        "--feedback runs the online loop's gate and journal in one process; it "
                        "cannot be combined with several workers",
                        seen=f"--workers {config.workers} --feedback {feedback}",
                        fix="serve the online loop with --workers 1",
                    )
                )
            code = run_workers(repo, config, options, ledger=ledger)
            if code != 0:
                raise typer.Exit(code)
            return
        online = online_config(max_auc_drop, holdout_size, min_holdout) if feedback is not None else None
        drained = run_server(
            repo, config, options, ledger=ledger, on_started=print_banner, feedback=feedback, online=online
        )
    except ConfigError as error:
        err.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KilnError as error:
        err.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if not drained:
        err.print("warning: requests were still in flight when the drain timed out", markup=False)
        raise typer.Exit(1)


def online_config(max_auc_drop: float, holdout_size: int, min_holdout: int) -> OnlineGateConfig:
    """The serving gate's settings; ``ConfigError`` naming a value out of range."""
    from kiln.online.loop import OnlineGateConfig  # noqa: PLC0415

    if not 0.0 <= max_auc_drop <= 1.0:
        raise ConfigError(describe("--max-auc-drop is out of range", seen=max_auc_drop, fix="use 0..1"))
    if not 1 <= holdout_size <= 1_000_000:
        raise ConfigError(describe("--holdout-size is out of range", seen=holdout_size, fix="use 1..1000000"))
    if not 0 <= min_holdout <= holdout_size:
        raise ConfigError(
            describe("--min-holdout must be in 0..--holdout-size", seen=(min_holdout, holdout_size))
        )
    return OnlineGateConfig(max_auc_drop=max_auc_drop, holdout_size=holdout_size, min_holdout=min_holdout)


def run_server(
    repo: Path,
    config: ServerConfig,
    options: dict[str, object],
    *,
    ledger: Path | None,
    on_started: Callable[[RunningServer], None],
    feedback: Path | None = None,
    online: OnlineGateConfig | None = None,
) -> bool:
    """Serve ``repo`` until SIGTERM/SIGINT (the server stack loads only here)."""
    from kiln.server.serve import serve_repository  # noqa: PLC0415

    return serve_repository(
        repo,
        config,
        ledger=ledger,
        repository=options,
        on_started=on_started,
        feedback=feedback,
        online=online,
    )


def run_workers(repo: Path, config: ServerConfig, options: dict[str, object], *, ledger: Path | None) -> int:
    """``--workers N > 1``: supervise N worker processes on shared ports; returns the exit code."""
    from kiln.cli.serve_worker import worker_command  # noqa: PLC0415
    from kiln.server.serve import default_ledger  # noqa: PLC0415
    from kiln.server.workers import SharedPorts, WorkerCommand, serve_workers  # noqa: PLC0415

    used = ledger or default_ledger(repo)

    def command_for(ports: SharedPorts) -> Callable[[int], WorkerCommand]:
        return lambda index: worker_command(repo, config, options, ledger=used, ports=ports, index=index)

    return serve_workers(repo, config, command_for, ledger=used, on_event=_say)


def _say(line: str) -> None:
    say(line)


def print_banner(server: RunningServer, then: Callable[[RunningServer], None] | None = None) -> None:
    """Print where the server listens now, and what it serves once every model is loaded (then
    call ``then``)."""
    grpc = f", gRPC {server.grpc_url}" if server.grpc_url else ""
    print(f"kiln serving: HTTP http://{server.http_url} (metrics /metrics){grpc}", flush=True)
    task = asyncio.get_running_loop().create_task(_when_ready(server, then))
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


_BACKGROUND: set[asyncio.Task[None]] = set()
READY_POLL_S = 0.1


async def _when_ready(server: RunningServer, then: Callable[[RunningServer], None] | None) -> None:
    while not server.core.is_ready():
        if server.core.draining:
            return
        await asyncio.sleep(READY_POLL_S)
    # What the runtime serves, the source readiness is computed from: the repository's index
    # can still show a version LOADING for a moment after the runtime has made it READY.
    from kiln.server.model_info import ready_versions  # noqa: PLC0415 (the server stack)

    runtime = server.core.runtime
    served = ", ".join(
        f"{name} {version}"
        for name in sorted(runtime.models)
        for version in ready_versions(runtime.model(name).status())
    )
    served = served or "no models yet"
    print(f"kiln ready: {served}", flush=True)
    if then is not None:
        then(server)
