from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from server_fakes import PAIR, FakeControl, FakeEngine, make_runtime

from kiln.errors import InvalidInput, ModelNotFound, NotReady
from kiln.metering.usage import UsageEvent
from kiln.runtime import FaultSpec, InferResult, Runtime
from kiln.server.config import ServerConfig
from kiln.server.core import InferRequest, ServerCore, Unsupported, usage_event


class RecordingMeter:
    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def record(self, event: UsageEvent) -> None:
        self.events.append(event)


def pair_inputs(rows: int = 2) -> dict[str, np.ndarray]:
    a = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
    return {"a": a, "b": np.ones_like(a)}


def test_infer_returns_outputs_in_the_order_asked_and_meters_the_request() -> None:
    meter = RecordingMeter()
    core = ServerCore(make_runtime("pair"), meter=meter)
    request = InferRequest("pair", pair_inputs(3), outputs=("diff", "sum"), tenant="acme")
    response = asyncio.run(core.infer(request))
    assert [name for name, _ in response.outputs] == ["diff", "sum"]
    np.testing.assert_array_equal(response.outputs[1][1], pair_inputs(3)["a"] + 1)
    assert response.version == "1"
    (event,) = meter.events
    assert (event.tenant, event.model, event.version, event.items) == ("acme", "pair", "1", 3)
    assert event.device_seconds > 0


def test_unknown_requested_output_is_refused_naming_the_known_ones() -> None:
    core = ServerCore(make_runtime("pair"))
    with pytest.raises(InvalidInput, match=r"unknown output\(s\) requested: \['prob'\].*\['diff', 'sum'\]"):
        asyncio.run(core.infer(InferRequest("pair", pair_inputs(), outputs=("prob",))))


def test_wrong_inputs_get_the_runtimes_message() -> None:
    core = ServerCore(make_runtime("pair"))
    with pytest.raises(InvalidInput, match="missing input 'b'"):
        asyncio.run(core.infer(InferRequest("pair", {"a": pair_inputs()["a"]})))


def test_device_seconds_are_the_requests_share_of_its_batch() -> None:
    result = InferResult({}, "m", "4", "primary", 0, 1_000_000, 6_000_000, 1_000_000, batch_rows=8, retries=0)
    event = usage_event("acme", result, rows=2, now_s=100.0)
    assert event == UsageEvent(100.0, "acme", "m", "4", 2, pytest.approx(0.002))


def test_a_failing_meter_never_fails_the_request() -> None:
    class Broken:
        def record(self, event: UsageEvent) -> None:
            raise RuntimeError("disk full")

    core = ServerCore(make_runtime("pair"), meter=Broken())
    assert asyncio.run(core.infer(InferRequest("pair", pair_inputs()))).version == "1"


def test_draining_refuses_new_requests_and_waits_for_those_in_flight() -> None:
    runtime = Runtime()
    runtime.add_model("pair")
    engine = FakeEngine(PAIR)
    runtime.load_version("pair", "1", engine).result(30)
    engine.gate = threading.Event()
    core = ServerCore(runtime)

    async def scenario() -> None:
        running = asyncio.ensure_future(core.infer(InferRequest("pair", pair_inputs())))
        while core.in_flight == 0:
            await asyncio.sleep(0)
        core.begin_drain()
        with pytest.raises(NotReady, match="shutting down"):
            await core.infer(InferRequest("pair", pair_inputs()))
        assert not await core.wait_drained(0.01)
        assert engine.gate is not None
        engine.gate.set()
        assert await core.wait_drained(10)
        assert (await running).version == "1"

    asyncio.run(scenario())


def test_readiness_waits_for_start_and_for_models_the_repository_is_loading() -> None:
    control = FakeControl()
    core = ServerCore(make_runtime("pair"), control)
    assert not core.is_ready()
    core.mark_started()
    assert core.is_ready()
    control.set_state("ctr", "1", "LOADING")
    assert core.readiness().waiting_for == ("ctr",)
    core.begin_drain()
    assert core.readiness().reason == "shutting down"


def test_a_model_only_the_repository_knows_is_not_ready_yet() -> None:
    control = FakeControl()
    control.set_state("ctr", "3", "LOADING")
    core = ServerCore(make_runtime("pair"), control)
    with pytest.raises(NotReady, match=r"'ctr' is not serving yet.*version 3 LOADING"):
        core.model_metadata("ctr")
    assert not core.model_ready("ctr")
    with pytest.raises(ModelNotFound, match="no model named 'nope'"):
        core.model_metadata("nope")


def test_metadata_config_and_statistics() -> None:
    runtime = make_runtime("pair")
    core = ServerCore(runtime, config=ServerConfig(priority_levels=5, default_priority_level=3))
    asyncio.run(core.infer(InferRequest("pair", pair_inputs(2))))
    metadata = core.model_metadata("pair")
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [
        {"name": "a", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "b", "datatype": "FP32", "shape": [-1, 4]},
    ]
    config = core.model_config("pair")
    assert config["max_batch_size"] == 8
    assert config["input"] == [
        {"name": "a", "data_type": "TYPE_FP32", "dims": [4]},
        {"name": "b", "data_type": "TYPE_FP32", "dims": [4]},
    ]
    assert config["dynamic_batching"] == {
        "preferred_batch_size": [],
        "max_queue_delay_microseconds": 0,
        "priority_levels": 5,
        "default_priority_level": 3,
    }
    assert config["parameters"] == {"dispatch_when_idle": {"string_value": "true"}}
    (stats,) = core.model_statistics("pair")["model_stats"]  # type: ignore[misc]
    assert (stats["name"], stats["version"], stats["inference_count"], stats["execution_count"]) == (
        "pair",
        "1",
        2,
        1,
    )
    assert stats["inference_stats"]["success"]["count"] == 1
    assert stats["batch_stats"][0]["batch_size"] == 2
    assert core.model_statistics("pair", "1") == core.model_statistics()


def test_unknown_versions_are_not_found_and_name_the_ready_ones() -> None:
    core = ServerCore(make_runtime("pair"))
    with pytest.raises(ModelNotFound, match=r"no version '7'.*ready versions: \['1'\]"):
        core.model_config("pair", "7")
    with pytest.raises(ModelNotFound, match="no loaded version '7'"):
        core.model_statistics("pair", "7")
    assert core.model_ready("pair", "1")
    assert not core.model_ready("pair", "7")


def test_repository_calls_go_to_the_model_control() -> None:
    control = FakeControl()
    control.set_state("ctr", "1", "READY")
    control.set_state("old", "1", "UNAVAILABLE")
    core = ServerCore(make_runtime("pair"), control)
    assert [e["name"] for e in core.repository_index(ready_only=True)] == ["ctr"]
    assert core.load_model("ctr") == [{"name": "ctr", "version": "1", "state": "LOADING", "reason": ""}]
    core.unload_model("old")
    assert control.calls == [("load", "ctr"), ("unload", "old")]


def test_without_a_repository_the_index_comes_from_the_runtime_and_loading_is_unsupported() -> None:
    core = ServerCore(make_runtime("pair"))
    assert core.repository_index() == [{"name": "pair", "version": "1", "state": "READY", "reason": ""}]
    with pytest.raises(Unsupported, match="no model repository"):
        core.load_model("pair")


def test_admin_operations() -> None:
    core = ServerCore(make_runtime("pair"))
    assert core.set_faults("pair", FaultSpec(fail_next=1))["faults"]["fail_next"] == 1  # type: ignore[index]
    status = core.model_status("pair")
    assert status["active_version"] == "1"
    with pytest.raises(ModelNotFound, match="no earlier version"):
        core.rollback("pair")
