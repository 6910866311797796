"""kiln's errors as HTTP statuses, in one table, and the ``{"error": "..."}`` body KServe uses."""

from __future__ import annotations

import orjson

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

STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (InvalidInput, 400),
    (ConfigError, 400),
    (ModelError, 400),
    (Unauthorized, 401),
    (ModelNotFound, 404),
    (TooLarge, 413),
    (Cancelled, 499),
    (Unsupported, 501),
    (NotReady, 503),
    (Overloaded, 503),
    (EngineFailed, 503),
    (EngineDead, 503),
    (WorkersDiverged, 503),
    (DeadlineExceeded, 504),
    (KilnError, 500),
)
"""Checked in order (the first class the error is an instance of wins); anything else is 500."""


def http_status(error: BaseException) -> int:
    for kind, status in STATUS:
        if isinstance(error, kind):
            return status
    return 500


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def error_reply(error: BaseException) -> tuple[int, bytes]:
    """The status and JSON body for a failed request."""
    return http_status(error), error_body(client_message(error))
