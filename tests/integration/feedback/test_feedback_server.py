"""Feedback over a real server: HTTP ``POST /v2/models/{m}/feedback`` and the gRPC service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from kiln.feedback import FeedbackStore
from kiln.runtime import Runtime
from kiln.server.config import ServerConfig
from kiln.server.grpc._generated import feedback_pb2 as pb
from kiln.server.grpc._generated import feedback_pb2_grpc as pb_grpc
from kiln.server.serve import BackgroundServer

pytestmark = pytest.mark.integration

CONFIG = ServerConfig(host="127.0.0.1", http_port=0, grpc_port=0)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[BackgroundServer, FeedbackStore]]:
    store = FeedbackStore(tmp_path / "feedback.db")
    with BackgroundServer(Runtime(), config=CONFIG, feedback=store, close_runtime=True) as server:
        yield server, store
    store.close()


def test_http_feedback_is_stored_before_the_reply(served: tuple[BackgroundServer, FeedbackStore]) -> None:
    server, store = served
    body = {
        "events": [{"label": 1, "features": {"dense": [1.5], "sparse": [3]}}, {"request_id": "r", "label": 0}]
    }
    reply = httpx.post(f"http://{server.http_url}/v2/models/ctr/feedback", json=body, timeout=10)
    assert reply.status_code == 200
    assert reply.json() == {"accepted": 2, "first_offset": 1, "last_offset": 2}
    stored = store.read("ctr", after=0)
    assert [e.event.label for e in stored] == [1.0, 0.0]
    assert stored[0].event.features == {"dense": [1.5], "sparse": [3]}


def test_http_bad_feedback_is_a_400_naming_the_field(served: tuple[BackgroundServer, FeedbackStore]) -> None:
    server, store = served
    body = {"events": [{"label": 1, "features": {"dense": [1.0]}}, {"label": 3, "request_id": "x"}]}
    reply = httpx.post(f"http://{server.http_url}/v2/models/ctr/feedback", json=body, timeout=10)
    assert reply.status_code == 400
    assert "events[1].label" in reply.json()["error"]
    broken = httpx.post(f"http://{server.http_url}/v2/models/ctr/feedback", content=b"{no", timeout=10)
    assert broken.status_code == 400
    assert store.count() == 0


def test_grpc_feedback(served: tuple[BackgroundServer, FeedbackStore]) -> None:
    server, store = served
    assert server.grpc_url is not None
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = pb_grpc.FeedbackServiceStub(channel)
        event = pb.FeedbackEvent(
            label=1.0, timestamp=12.5, features={"dense": pb.FeatureValues(values=[2.0])}
        )
        reply = stub.SendFeedback(pb.FeedbackRequest(model_name="ctr", events=[event]), timeout=10)
        assert (reply.accepted, reply.first_offset, reply.last_offset) == (1, 1, 1)
        with pytest.raises(grpc.RpcError) as failure:
            stub.SendFeedback(
                pb.FeedbackRequest(model_name="ctr", events=[pb.FeedbackEvent(label=1.0)]), timeout=10
            )
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[0] needs request_id or features" in str(failure.value.details())
    (stored,) = store.read("ctr", after=0)
    assert stored.event.timestamp_s == 12.5
    assert stored.event.features == {"dense": [2.0]}


def test_a_server_without_a_store_answers_501(tmp_path: Path) -> None:
    with BackgroundServer(Runtime(), config=CONFIG, close_runtime=True) as server:
        reply = httpx.post(
            f"http://{server.http_url}/v2/models/ctr/feedback",
            json={"events": [{"request_id": "a"}]},
            timeout=10,
        )
    assert reply.status_code == 501
