"""Real processes: two asking for one key at once (one builds, the other waits and gets that entry),
and one dying mid-build (no entry appears; gc removes what it left)."""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

from cache_fakes import FakeBackend, make_source, temp_leftovers

from kiln.cache.builder import obtain_engine
from kiln.cache.gc import collect_garbage
from kiln.cache.store import EngineStore
from kiln.compile.spec import BuildSpec


def _worker(root: str, log: str, me: Event, other: Event, results: Queue[tuple[str, str, str]]) -> None:
    # Whoever gets the lock first holds its build open until the other process has started asking.
    backend = FakeBackend(log_path=Path(log), before_build=lambda: bool(other.wait(30)))
    me.set()
    report = obtain_engine(make_source(), BuildSpec(), backend, EngineStore(Path(root)), lock_timeout_s=60)
    results.put((report.path, str(report.artifact.path), (report.artifact.path / "engine.bin").read_text()))


def test_two_processes_build_one_key_exactly_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    root, log = tmp_path / "engines", tmp_path / "calls.log"
    results: Queue[tuple[str, str, str]] = ctx.Queue()
    a, b = ctx.Event(), ctx.Event()
    procs = [
        ctx.Process(target=_worker, args=(str(root), str(log), a, b, results)),
        ctx.Process(target=_worker, args=(str(root), str(log), b, a, results)),
    ]
    for proc in procs:
        proc.start()
    got = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0

    assert log.read_text().splitlines() == ["build"]
    assert sorted(path for path, _, _ in got) == ["build", "hit"]
    assert got[0][1:] == got[1][1:]
    store = EngineStore(root)
    [entry] = store.list_entries()
    assert str(store.open(entry).path) == got[0][1]
    assert temp_leftovers(root) == []


def _crashing_worker(root: str) -> None:
    backend = FakeBackend(before_build=lambda: os._exit(3))  # the process dies mid-build
    obtain_engine(make_source(), BuildSpec(), backend, EngineStore(Path(root)))


def test_a_builder_dying_mid_build_leaves_no_entry_and_gc_cleans_up(tmp_path: Path) -> None:
    root = tmp_path / "engines"
    proc = multiprocessing.get_context("spawn").Process(target=_crashing_worker, args=(str(root),))
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 3

    store = EngineStore(root)
    assert store.list_entries() == []
    [leftover] = temp_leftovers(root)
    assert leftover.startswith("build.")
    assert collect_garbage(store).temp_removed == (leftover,)
    assert temp_leftovers(root) == []
    assert obtain_engine(make_source(), BuildSpec(), FakeBackend(), store).path == "build"
