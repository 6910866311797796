from __future__ import annotations

import json

import grpc
import pytest

from kiln.errors import (
    BuildError,
    Cancelled,
    ConfigError,
    DeadlineExceeded,
    EngineDead,
    EngineFailed,
    InvalidInput,
    ModelError,
    ModelNotFound,
    NotReady,
    Overloaded,
    Unauthorized,
)
from kiln.server.admin_calls import WorkersDiverged
from kiln.server.core import TooLarge, Unsupported
from kiln.server.grpc.errors import grpc_error
from kiln.server.http.errors import error_reply

Code = grpc.StatusCode
TABLE = [
    (InvalidInput("bad"), 400, Code.INVALID_ARGUMENT),
    (ConfigError("bad"), 400, Code.INVALID_ARGUMENT),
    (ModelError("bad"), 400, Code.INVALID_ARGUMENT),
    (Unauthorized("who"), 401, Code.UNAUTHENTICATED),
    (ModelNotFound("where"), 404, Code.NOT_FOUND),
    (TooLarge("big"), 413, Code.RESOURCE_EXHAUSTED),
    (Cancelled("gone"), 499, Code.CANCELLED),
    (Unsupported("no"), 501, Code.UNIMPLEMENTED),
    (NotReady("later"), 503, Code.UNAVAILABLE),
    (Overloaded("full"), 503, Code.UNAVAILABLE),
    (EngineFailed("boom"), 503, Code.UNAVAILABLE),
    (EngineDead("dead"), 503, Code.UNAVAILABLE),
    (WorkersDiverged("some"), 503, Code.UNAVAILABLE),
    (DeadlineExceeded("late"), 504, Code.DEADLINE_EXCEEDED),
    (BuildError("kiln's own"), 500, Code.INTERNAL),
    (RuntimeError("/secret/path exploded"), 500, Code.INTERNAL),
]


@pytest.mark.parametrize(("error", "status", "code"), TABLE, ids=[type(e).__name__ for e, _, _ in TABLE])
def test_each_error_has_its_http_status_and_grpc_code(
    error: Exception, status: int, code: grpc.StatusCode
) -> None:
    http_status, body = error_reply(error)
    grpc_code, message = grpc_error(error)
    assert (http_status, grpc_code) == (status, code)
    assert json.loads(body)["error"]
    assert message


def test_internal_details_stay_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    _, message = grpc_error(RuntimeError("/secret/path exploded"))
    assert "secret" not in message
    assert "error id" in message
    assert "/secret/path exploded" in caplog.text
    _, message = grpc_error(EngineFailed("onnxruntime: node Gemm_3 failed"))
    assert "Gemm_3" not in message
    assert "Gemm_3" in caplog.text


def test_kiln_messages_reach_the_client_as_written() -> None:
    assert grpc_error(InvalidInput("input 'x' has shape [2]; expected [-1, 4]"))[1] == (
        "input 'x' has shape [2]; expected [-1, 4]"
    )
