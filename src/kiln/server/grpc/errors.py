"""kiln's errors as gRPC status codes, in one table."""

from __future__ import annotations

import grpc

from kiln.errors import (
    Cancelled,
    ConfigError,
    DeadlineExceeded,
    EngineDead,
    EngineFailed,
    InvalidInput,
    KilnError,
    ModelError,
    ModelNotFound,
    NotReady,
    Overloaded,
    Unauthorized,
)
from kiln.server.admin_calls import WorkersDiverged
from kiln.server.core import TooLarge, Unsupported
from kiln.server.messages import client_message

CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (ModelError, grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthorized, grpc.StatusCode.UNAUTHENTICATED),
    (ModelNotFound, grpc.StatusCode.NOT_FOUND),
    (TooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Cancelled, grpc.StatusCode.CANCELLED),
    (Unsupported, grpc.StatusCode.UNIMPLEMENTED),
    (NotReady, grpc.StatusCode.UNAVAILABLE),
    (Overloaded, grpc.StatusCode.UNAVAILABLE),
    (EngineFailed, grpc.StatusCode.UNAVAILABLE),
    (EngineDead, grpc.StatusCode.UNAVAILABLE),
    (WorkersDiverged, grpc.StatusCode.UNAVAILABLE),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (KilnError, grpc.StatusCode.INTERNAL),
)
"""Checked in order (the first class the error is an instance of wins); anything else is INTERNAL."""


def grpc_code(error: BaseException) -> grpc.StatusCode:
    for kind, code in CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def grpc_error(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message for a failed call."""
    return grpc_code(error), client_message(error)
