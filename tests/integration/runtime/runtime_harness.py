"""Helpers for the runtime's integration tests: configs, real ORT engines per version, and a load
generator of many concurrent tasks and threads that checks every answer against its version."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
from runtime_engines import CountingEngine, EngineBuilder, add_model, rows

from kiln.runtime import BatchingConfig, FallbackConfig, ModelConfig, RetryConfig, Runtime, VersionPolicy


def config(
    *,
    num_instances: int = 2,
    max_batch_size: int = 8,
    delay_us: int = 500,
    max_queue_size: int = 1024,
    keep: int = 1,
    max_retries: int = 2,
    preferred: tuple[int, ...] = (),
    dispatch_when_idle: bool = True,
) -> ModelConfig:
    return ModelConfig(
        num_instances=num_instances,
        batching=BatchingConfig(
            max_batch_size=max_batch_size,
            max_queue_delay_us=delay_us,
            max_queue_size=max_queue_size,
            preferred_batch_sizes=preferred,
            dispatch_when_idle=dispatch_when_idle,
        ),
        retry=RetryConfig(max_retries=max_retries),
        fallback=FallbackConfig(probe_interval_s=5.0, probe_in_background=False),
        versions=VersionPolicy(max_loaded_versions=keep, drain_timeout_s=10.0),
    )


class Engines:
    """Factories of real ORT engines computing ``x + c``; remembers every engine it made."""

    def __init__(self, build: EngineBuilder) -> None:
        self.build = build
        self.made: dict[str, list[CountingEngine]] = {}

    def factory(self, version: str, constant: float) -> Callable[[], CountingEngine]:
        def make() -> CountingEngine:
            engine = self.build(add_model(constant))
            self.made.setdefault(version, []).append(engine)
            return engine

        return make


class Load:
    """``num_tasks`` asyncio tasks and ``num_threads`` threads sending requests until stopped.

    Each answer must equal ``x + constants[result.version]``; anything else (an error, a wrong
    value) is recorded in ``problems``.
    """

    def __init__(
        self,
        runtime: Runtime,
        model: str,
        constants: dict[str, float],
        *,
        num_tasks: int = 8,
        num_threads: int = 2,
    ) -> None:
        self.runtime, self.model, self.constants = runtime, model, constants
        self.num_tasks, self.num_threads = num_tasks, num_threads
        self.served: Counter[str] = Counter()
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._threads: list[threading.Thread] = []

    @property
    def total(self) -> int:
        return sum(self.served.values())

    async def __aenter__(self) -> Load:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        num_tasks, num_threads = self.num_tasks, self.num_threads
        self._tasks = [loop.create_task(self._task(i)) for i in range(num_tasks)]
        self._threads = [
            threading.Thread(target=self._thread, args=(loop, 1000 + i)) for i in range(num_threads)
        ]
        for thread in self._threads:
            thread.start()

    async def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await asyncio.to_thread(lambda: [t.join(30) for t in self._threads])

    async def until_served(self, version: str, count: int = 20, timeout_s: float = 20.0) -> None:
        give_up = time.monotonic() + timeout_s
        while self.served[version] < count and not self.problems:
            assert time.monotonic() < give_up, f"version {version} served {self.served[version]} < {count}"
            await asyncio.sleep(0.005)

    async def _one(self, seed: int) -> None:
        x = rows(1 + seed % 3, seed)
        try:
            result = await self.runtime.infer(self.model, x)
        except Exception as exc:
            self.problems.append(f"{type(exc).__name__}: {exc}")
            return
        self._check(x, result.version, result.outputs["y"])

    def _check(self, x: dict[str, np.ndarray], version: str, y: np.ndarray) -> None:
        want = x["x"] + np.float32(self.constants[version])
        if not np.allclose(y, want, atol=1e-5):
            self.problems.append(f"version {version} answered {y.tolist()} for {x['x'].tolist()}")
        self.served[version] += 1

    async def _task(self, index: int) -> None:
        seed = index * 100_000
        while not self._stop.is_set():
            await self._one(seed)
            seed += 1

    def _thread(self, loop: asyncio.AbstractEventLoop, index: int) -> None:
        seed = index * 100_000
        while not self._stop.is_set():
            x = rows(1 + seed % 3, seed)
            seed += 1
            try:
                result = asyncio.run_coroutine_threadsafe(self.runtime.infer(self.model, x), loop).result(30)
            except Exception as exc:
                self.problems.append(f"thread: {type(exc).__name__}: {exc}")
                continue
            loop.call_soon_threadsafe(self._check, x, result.version, result.outputs["y"])
