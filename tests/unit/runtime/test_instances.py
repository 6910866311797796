"""The instance pool on fake engines: worker threads, rebuild after a transient failure, dead engines."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import pytest
from runtime_fakes import FakeEngine, x_rows

from kiln.compile.backends.base import Instance
from kiln.errors import EngineDead, EngineFailed, InvalidInput, NotReady
from kiln.runtime.instances import InstancePool
from kiln.types import Array


def run(instance: Instance) -> dict[str, Array]:
    return instance.run(x_rows(2))


def pool(engine: FakeEngine, n: int = 2) -> tuple[InstancePool, list[int]]:
    rebuilds: list[int] = []
    p = InstancePool("m:1:primary", engine.create_instance, n, on_rebuild=lambda: rebuilds.append(1))
    return p, rebuilds


def test_runs_happen_on_worker_threads_with_warmup_on_every_instance() -> None:
    engine = FakeEngine(1.0)
    p, _ = pool(engine, n=3)
    warm = p.start([x_rows(1), x_rows(2)])
    assert len(warm) == 3
    assert all(len(per) == 2 for per in warm)
    assert p.submit(run).result(5)["y"][0, 0] == 1.0
    assert threading.current_thread().name not in engine.threads
    assert all(name.startswith("kiln-m:1:primary-") for name in engine.threads)
    assert p.close(5)
    assert engine.open_instances == 0


def test_a_transient_failure_replaces_the_instance_before_the_error_is_returned() -> None:
    engine = FakeEngine()
    p, rebuilds = pool(engine, n=1)
    p.start()
    engine.run_errors.append(EngineFailed("flaky"))
    with pytest.raises(EngineFailed):
        p.submit(run).result(5)
    assert rebuilds == [1]
    assert engine.num_created == 2
    assert engine.open_instances == 1
    assert p.submit(run).result(5)["y"].shape == (2, 4)
    p.close(5)


def test_invalid_input_keeps_the_instance() -> None:
    engine = FakeEngine()
    p, rebuilds = pool(engine, n=1)
    p.start()
    engine.run_errors.append(InvalidInput("bad"))
    with pytest.raises(InvalidInput):
        p.submit(run).result(5)
    assert rebuilds == []
    assert engine.num_created == 1
    p.close(5)


def test_a_dead_engine_fails_fast_until_revived() -> None:
    engine = FakeEngine()
    p, _ = pool(engine, n=2)
    p.start()
    engine.run_errors.append(EngineDead("sticky"))
    with pytest.raises(EngineDead):
        p.submit(run).result(5)
    runs = engine.num_runs
    with pytest.raises(EngineDead, match="sticky"):
        p.submit(run).result(5)
    assert engine.num_runs == runs
    assert p.dead_reason == "sticky"
    p.revive(run)
    assert p.dead_reason is None
    assert p.submit(run).result(5)["y"].shape == (2, 4)
    p.close(5)


def test_a_failing_revive_leaves_the_pool_dead() -> None:
    engine = FakeEngine()
    p, _ = pool(engine, n=1)
    p.start()
    engine.run_errors.append(EngineDead("sticky"))
    with pytest.raises(EngineDead):
        p.submit(run).result(5)
    engine.run_errors.append(EngineDead("still"))
    with pytest.raises(EngineDead):
        p.revive(run)
    assert p.dead_reason == "sticky"
    p.close(5)


def test_failing_to_rebuild_an_instance_marks_the_engine_dead() -> None:
    engine = FakeEngine()
    p, _ = pool(engine, n=1)
    p.start()
    engine.run_errors.append(EngineFailed("flaky"))
    engine.create_errors.append(RuntimeError("device lost"))
    with pytest.raises(EngineFailed):
        p.submit(run).result(5)
    assert p.dead_reason is not None
    assert "device lost" in p.dead_reason
    p.close(5)


def test_a_failing_start_stops_every_worker_and_raises() -> None:
    engine = FakeEngine(create_errors=[RuntimeError("no memory")])
    p, _ = pool(engine, n=3)
    with pytest.raises(RuntimeError, match="no memory"):
        p.start()
    with pytest.raises(NotReady):
        p.submit(run)
    assert engine.open_instances == 0


def test_close_finishes_queued_work_and_refuses_new_work() -> None:
    engine = FakeEngine()
    engine.gate = threading.Event()
    p, _ = pool(engine, n=1)
    p.start()
    futures: list[Future[dict[str, Array]]] = [p.submit(run) for _ in range(3)]
    closer = threading.Thread(target=p.close, args=(5,))
    closer.start()
    engine.gate.set()
    closer.join(5)
    assert all(f.result(5)["y"].shape == (2, 4) for f in futures)
    with pytest.raises(NotReady):
        p.submit(run)


def test_a_cancelled_job_is_skipped() -> None:
    engine = FakeEngine()
    engine.gate = threading.Event()
    p, _ = pool(engine, n=1)
    p.start()
    first = p.submit(run)
    second = p.submit(run)
    assert second.cancel()
    engine.gate.set()
    first.result(5)
    p.close(5)
    assert engine.num_runs == 1


def test_submit_async_delivers_results_and_errors_to_the_loop() -> None:
    engine = FakeEngine(1.0)
    p, rebuilds = pool(engine, n=1)
    p.start()

    async def main() -> None:
        result = await p.submit_async(run)
        assert result["y"][0, 0] == 1.0
        engine.run_errors.append(EngineFailed("flaky"))
        with pytest.raises(EngineFailed, match="flaky"):
            await p.submit_async(run)
        assert rebuilds == [1]

    asyncio.run(main())
    assert p.close(5)
    with pytest.raises(NotReady):
        asyncio.run(_submit_async(p))


async def _submit_async(p: InstancePool) -> None:
    await p.submit_async(run)


def test_a_job_whose_caller_left_before_it_started_is_skipped() -> None:
    engine = FakeEngine()
    engine.gate = threading.Event()
    p, _ = pool(engine, n=1)
    p.start()

    async def main() -> None:
        first = p.submit_async(run)
        second = p.submit_async(run)
        second.cancel()
        engine.gate.set()
        await first

    asyncio.run(main())
    p.close(5)
    assert engine.num_runs == 1


def test_close_finishes_queued_async_jobs() -> None:
    engine = FakeEngine()
    engine.gate = threading.Event()
    p, _ = pool(engine, n=1)
    p.start()

    async def main() -> None:
        running = p.submit_async(run)
        queued = [p.submit_async(run) for _ in range(2)]
        closer = threading.Thread(target=p.close, args=(5,))
        closer.start()
        engine.gate.set()
        results = await asyncio.wait_for(asyncio.gather(running, *queued, return_exceptions=True), 5)
        closer.join(5)
        assert all(isinstance(r, dict) for r in results)

    asyncio.run(main())
