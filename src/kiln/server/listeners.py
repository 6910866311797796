"""The two listeners of a kiln server: kiln's HTTP server (:mod:`kiln.server.http.server`, on a
socket kiln binds itself, so port 0 works and the real port is known) and ``grpc.aio`` for gRPC."""

from __future__ import annotations

import socket

from grpc import aio

from kiln.errors import ConfigError, describe
from kiln.server.auth import Authenticator
from kiln.server.config import ServerConfig
from kiln.server.core import ServerCore
from kiln.server.feedback import FeedbackIntake
from kiln.server.grpc.service import create_grpc_server
from kiln.server.http.app import KServeApp
from kiln.server.http.server import HttpServer

STARTUP_TIMEOUT_S = 30.0


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


async def start_http(app: KServeApp, config: ServerConfig) -> HttpServer:
    """kiln's HTTP server on ``config.host:http_port``, listening; with ``workers > 1`` the port is
    shared (SO_REUSEPORT). Inference requests take the protocol's own path (``app.steps``)."""
    sock = bind_socket(config.host, config.http_port, reuse_port=config.workers > 1)
    server = HttpServer(
        app,
        sock,
        steps=app.steps,
        max_request_bytes=config.max_request_bytes,
        keep_alive_s=config.keep_alive_s,
    )
    try:
        await server.start()
    except BaseException:
        sock.close()
        raise
    return server


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
