"""What a benchmark sends requests to: the :class:`Target` interface and the in-process targets.

* :class:`RuntimeTarget` — a model of an in-process :class:`kiln.runtime.Runtime` (dynamic
  batching, hot swap), called from asyncio tasks. Every reply carries its queue/compute split and
  the version that served it.
* :class:`EngineTarget` — one engine, one request per engine run, no batching: the baseline a
  batching server has to beat. ``num_instances`` worker threads each own one instance.
* ``kiln.bench.kserve.KServeTarget`` — any KServe v2 server over HTTP or gRPC.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from kiln.bench.results import Reply, ServerCounters
from kiln.compile.backends.base import Engine, Instance
from kiln.errors import ConfigError, NotReady, describe
from kiln.runtime import Runtime
from kiln.types import Array, Tensors, TensorSpec


class Target(Protocol):
    """Something that serves one model. ``infer`` is called from many asyncio tasks at once."""

    @property
    def description(self) -> str:
        """One line for reports: what is measured (``runtime ctr``, ``http 127.0.0.1:8000 ctr``)."""

    async def open(self) -> tuple[TensorSpec, ...]:
        """Connect and check the model is served; its inputs. ``ConfigError`` when the target is
        unreachable, ``ModelNotFound`` naming the models it does serve."""

    async def infer(self, inputs: Tensors) -> Reply:
        """Send one request and wait for the answer; raise on failure (an ``error_kind`` is counted)."""

    async def counters(self) -> ServerCounters | None:
        """Cumulative server-side totals, when the target keeps them (else ``None``)."""

    async def aclose(self) -> None: ...


class RuntimeTarget:
    """One model of an in-process runtime; the runtime stays owned by the caller."""

    def __init__(self, runtime: Runtime, model: str, *, timeout_s: float | None = None) -> None:
        self.runtime = runtime
        self.model = model
        self.timeout_s = timeout_s

    @property
    def description(self) -> str:
        return f"runtime {self.model}"

    async def open(self) -> tuple[TensorSpec, ...]:
        status = self.runtime.model(self.model).status()
        if status.active_version is None:
            raise NotReady(
                describe(f"model {self.model!r} has no active version", fix="load a version first")
            )
        return status.inputs

    async def infer(self, inputs: Tensors) -> Reply:
        result = await self.runtime.infer(self.model, inputs, timeout_s=self.timeout_s)
        return Reply(result.queue_ns, result.compute_ns, result.version)

    async def counters(self) -> ServerCounters | None:
        return None  # every reply carries its own split

    async def aclose(self) -> None:
        return None


class EngineTarget:
    """One request per engine run on ``num_instances`` threads, each with its own instance.

    The reply's ``queue_ns`` is the wait for a free instance, ``compute_ns`` the engine run. The
    engine stays owned by the caller; :meth:`aclose` closes the instances and threads.
    """

    def __init__(self, engine: Engine, *, num_instances: int = 1, name: str = "engine") -> None:
        if not 1 <= num_instances <= 64:
            raise ConfigError(describe("num_instances is out of range", seen=num_instances, fix="use 1..64"))
        self.engine = engine
        self.name = name
        self.num_instances = num_instances
        self._local = threading.local()
        self._instances: list[Instance] = []
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(num_instances, thread_name_prefix=f"kiln-bench-{name}")

    @property
    def description(self) -> str:
        return f"engine {self.name} (one request per run, {self.num_instances} instance(s))"

    async def open(self) -> tuple[TensorSpec, ...]:
        return self.engine.inputs

    async def infer(self, inputs: Tensors) -> Reply:
        submitted = time.perf_counter_ns()
        loop = asyncio.get_running_loop()
        started, finished = await loop.run_in_executor(self._executor, self._run, inputs)
        return Reply(queue_ns=started - submitted, compute_ns=finished - started)

    def _run(self, inputs: Tensors) -> tuple[int, int]:
        instance: Instance | None = getattr(self._local, "instance", None)
        if instance is None:
            instance = self.engine.create_instance()
            self._local.instance = instance
            with self._lock:
                self._instances.append(instance)
        started = time.perf_counter_ns()
        outputs: dict[str, Array] = instance.run(inputs)
        del outputs
        return started, time.perf_counter_ns()

    async def counters(self) -> ServerCounters | None:
        return None

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
        with self._lock:
            instances, self._instances = self._instances, []
        for instance in instances:
            instance.close()
