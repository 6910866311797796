"""What a request and its response are once decoded, whichever protocol carried them, and the
two errors the protocol layer adds to kiln's hierarchy."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.errors import KilnError
from kiln.server.auth import DEFAULT_TENANT
from kiln.types import Array


class Unsupported(KilnError):
    """A protocol feature kiln's server does not implement (HTTP 501, gRPC UNIMPLEMENTED)."""


class TooLarge(KilnError):
    """A request over the server's size limit (HTTP 413, gRPC RESOURCE_EXHAUSTED)."""


@dataclass(frozen=True, slots=True)
class InferRequest:
    """One inference request, decoded. ``outputs`` names the outputs wanted (``None``: all);
    ``priority`` and ``timeout_us`` are the protocol's raw schedule parameters (Triton's
    convention, see :mod:`kiln.server.schedule`); ``remaining_s`` is the time left before the
    client's own deadline, when it set one."""

    model: str
    inputs: dict[str, Array]
    version: str | None = None
    id: str = ""
    outputs: tuple[str, ...] | None = None
    priority: object = None
    timeout_us: object = None
    remaining_s: float | None = None
    tenant: str = DEFAULT_TENANT


@dataclass(frozen=True, slots=True)
class InferResponse:
    """The outputs of one request (in the order asked for, else the model's) and who served it."""

    model: str
    version: str
    id: str
    outputs: tuple[tuple[str, Array], ...]
