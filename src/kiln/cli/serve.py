"""``kiln serve REPO``: serve a model repository over KServe v2 HTTP (with ``/metrics``) and gRPC.

Exit codes: 0 after a graceful shutdown (SIGTERM/SIGINT) that finished every request in flight,
1 on an internal error or when requests were cut off, 2 on bad input (options, keys file, folder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kiln.errors import ConfigError, KilnError
from kiln.server.config import ServerConfig, server_config


def _help(field: str) -> str:
    return ServerConfig.model_fields[field].description or ""


def serve_command(
    repo: Annotated[
        Path, typer.Argument(help="Model repository folder: <model>/config.yaml, <model>/<version>/.")
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
) -> None:
    """Serve a model repository: KServe v2 REST and gRPC, Prometheus metrics on /metrics."""
    from kiln.server.serve import serve_repository  # noqa: PLC0415 (the server stack loads only for this command)

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
        )
        drained = serve_repository(repo, config)
    except ConfigError as error:
        err.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KilnError as error:
        err.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if not drained:
        err.print("warning: requests were still in flight when the drain timed out", markup=False)
        raise typer.Exit(1)
