"""Admin calls between workers as data: the JSON line each worker sends, and the verdict on the replies."""

from __future__ import annotations

import pytest

from kiln.errors import InvalidInput
from kiln.runtime import FaultSpec
from kiln.server.admin_calls import AdminCall, PeerReply, WorkersDiverged, check_replies

CALLS = [
    AdminCall("load", "ctr"),
    AdminCall("unload", "ctr"),
    AdminCall("rollback", "ctr"),
    AdminCall("faults", "ctr", FaultSpec(fail_next=2, fail_fraction=0.5, delay_ms=1.5, seed=7), "fallback"),
    AdminCall("faults", "ctr", None, "primary"),
    AdminCall("stats", "ctr"),
    AdminCall("stats", ""),
]


@pytest.mark.parametrize("call", CALLS, ids=lambda c: f"{c.op}-{c.faults is not None}")
def test_a_call_survives_its_json_line(call: AdminCall) -> None:
    line = call.encode()
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert AdminCall.decode(line) == call


BAD_LINES = [
    (b"load ctr\n", "not valid JSON"),
    (b'["load", "ctr"]\n', "must be a JSON object (seen: list)"),
    (b'{"op": "reload", "model": "ctr"}\n', "unknown admin call (seen: reload); one of load, unload"),
    (b'{"op": "load"}\n', "must name its model (seen: None)"),
    (b'{"op": "load", "model": ""}\n', "must name its model (seen: '')"),
    (b'{"op": "stats"}\n', "must name its model (seen: None)"),
    (b'{"op": "stats", "model": "ctr", "faults": {}}\n', "a stats call takes no faults"),
    (b'{"op": "load", "model": "ctr", "version": "2"}\n', "unknown fields (seen: ['version'])"),
    (b'{"op": "faults", "model": "ctr", "target": 1}\n', "target must be a string (seen: 1)"),
    (b'{"op": "load", "model": "ctr", "faults": {"fail_next": 1}}\n', "a load call takes no faults"),
    (b'{"op": "faults", "model": "ctr", "faults": [1]}\n', "faults must be a JSON object"),
    (b'{"op": "faults", "model": "ctr", "faults": {"explode": 1}}\n', "unknown faults (seen: ['explode'])"),
    (b'{"op": "faults", "model": "ctr", "faults": {"fail_next": "2"}}\n', "fail_next must be a number"),
    (b'{"op": "faults", "model": "ctr", "faults": {"fail_next": true}}\n', "fail_next must be a number"),
    (b'{"op": "faults", "model": "ctr", "faults": {"fail_next": -1}}\n', "fail_next must be >= 0"),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES, ids=[m for _, m in BAD_LINES])
def test_a_bad_line_is_refused_naming_what_is_wrong(line: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        AdminCall.decode(line)
    assert message in str(caught.value)


def test_replies_that_all_applied_the_call_pass() -> None:
    check_replies(AdminCall("unload", "ctr"), 0, [PeerReply(1, 200), PeerReply(2, 200)])
    check_replies(AdminCall("unload", "ctr"), 0, [])  # one worker: nobody else to reach


def test_a_worker_that_did_not_apply_the_call_is_named_with_why() -> None:
    replies = [
        PeerReply(0, 200),
        PeerReply(2, None, "connection refused (the worker is down or restarting)"),
        PeerReply(3, 404, "the repository has no model 'ctr'"),
    ]
    with pytest.raises(WorkersDiverged) as caught:
        check_replies(AdminCall("load", "ctr"), 1, replies)
    message = str(caught.value)
    assert message.startswith("load of model 'ctr' was applied on worker(s) 0, 1 only")
    assert "worker 2 did not answer: connection refused (the worker is down or restarting)" in message
    assert "worker 3 refused it (404): the repository has no model 'ctr'" in message
    assert "repeating it is safe" in message


def test_a_rollback_that_diverged_is_not_said_to_be_safe_to_repeat() -> None:
    with pytest.raises(WorkersDiverged) as caught:
        check_replies(AdminCall("rollback", "ctr"), 0, [PeerReply(1, None, "no reply within 5 s")])
    assert "safe" not in str(caught.value)
    assert "GET /v2/admin/models/ctr/status on each worker" in str(caught.value)
