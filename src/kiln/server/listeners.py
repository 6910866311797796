"""The two listeners of a kiln server: uvicorn for HTTP (on a socket kiln binds itself, so port 0
works and the real port is known) and ``grpc.aio`` for gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from grpc import aio
from starlette.types import ASGIApp

from kiln.errors import ConfigError, describe
from kiln.server.auth import Authenticator
from kiln.server.config import ServerConfig
from kiln.server.core import ServerCore
from kiln.server.feedback import FeedbackIntake
from kiln.server.grpc.service import create_grpc_server
from kiln.server.http.protocol import KServeHttpProtocol

STARTUP_TIMEOUT_S = 30.0


class QuietUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: ``kiln.server.serve.serve`` owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def client_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def bind_socket(host: str, port: int, *, reuse_port: bool = False, what: str = "HTTP") -> socket.socket:
    """A TCP socket bound (not listening) to ``host:port``. ``reuse_port``: with SO_REUSEPORT, so
    that several processes listen on one port and the kernel spreads connections among them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            describe(f"cannot listen on {host}:{port} ({what})", seen=str(exc), fix="pick another port")
        ) from None
    sock.setblocking(False)
    return sock


async def start_http(app: ASGIApp, config: ServerConfig) -> tuple[QuietUvicorn, asyncio.Task[None], int]:
    """uvicorn on ``config.host:http_port``; with ``workers > 1`` the port is shared (SO_REUSEPORT)."""
    sock = bind_socket(config.host, config.http_port, reuse_port=config.workers > 1)
    port = int(sock.getsockname()[1])
    settings = uvicorn.Config(
        app,
        http=KServeHttpProtocol,
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=int(config.drain_timeout_s) + 1,
    )
    server = QuietUvicorn(settings)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]), name="kiln-http")
    deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT_S
    while not server.started:
        if task.done():
            task.result()
            raise ConfigError(describe("the HTTP server stopped while starting", seen=f"port {port}"))
        if asyncio.get_running_loop().time() > deadline:
            raise ConfigError(describe("the HTTP server did not start in time", seen=f"{STARTUP_TIMEOUT_S}s"))
        await asyncio.sleep(0.01)
    return server, task, port


async def start_grpc(
    core: ServerCore, auth: Authenticator, config: ServerConfig, feedback: FeedbackIntake | None = None
) -> tuple[aio.Server | None, int | None]:
    if config.grpc_port is None:
        return None, None
    server = create_grpc_server(core, auth, feedback=feedback)
    host = f"[{config.host}]" if ":" in config.host else config.host
    address = f"{host}:{config.grpc_port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(
            describe(f"cannot listen on {address} (gRPC)", seen=str(exc), fix="pick another port")
        ) from None
    if port == 0:
        raise ConfigError(describe(f"cannot listen on {address} (gRPC)", fix="pick another port"))
    await server.start()
    return server, port
