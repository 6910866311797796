"""One loaded version of a model: its resident engine(s), their instance pools, the router
between primary and fallback, its stats, and how a batch runs on it (with retries).

An engine is loaded once (weights resident) and serves ``num_instances`` instances, each on its own
worker thread. A batch is joined and split on the worker thread that runs it, so the event loop
only hands over references.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NoReturn

import numpy as np

from kiln._clock import Clock
from kiln.compile.backends.base import Engine, Instance, prepares_per_shape
from kiln.errors import EngineDead, EngineFailed, InvalidInput, KilnError, NotReady, describe
from kiln.model.signature import check_inputs
from kiln.runtime.batching.batcher import BatchOutcome
from kiln.runtime.batching.buckets import assemble, pad_sizes, split
from kiln.runtime.batching.policy import BatchKey
from kiln.runtime.checks import check_outputs, is_batchable, warmup_batch
from kiln.runtime.config import ModelConfig
from kiln.runtime.fallback import FallbackRouter, Route, RoutingChange
from kiln.runtime.faults import FaultInjector, FaultyInstance
from kiln.runtime.instances import InstancePool
from kiln.runtime.lifecycle import VersionLifecycle
from kiln.runtime.retry import ErrorClass, RetryAction, RetryDecision, classify, decide_retry
from kiln.runtime.stats import Counter, Stats
from kiln.types import Array, Tensors

log = logging.getLogger("kiln.runtime")
_MAX_ADMITTED_SHAPES = 256


@dataclass(frozen=True, slots=True)
class _RunOutput:
    parts: list[dict[str, Array]]
    input_ns: int
    infer_ns: int
    output_ns: int


class _BatchJob:
    """One batch as run on a worker thread: join, run, split (timed)."""

    __slots__ = ("batchable", "feed", "names", "padded_rows", "parts", "row_counts")

    def __init__(
        self,
        parts: Sequence[Tensors],
        row_counts: Sequence[int],
        padded_rows: int,
        names: Sequence[str],
        batchable: bool,
    ) -> None:
        self.parts, self.row_counts, self.padded_rows = parts, row_counts, padded_rows
        self.names, self.batchable = names, batchable
        self.feed: dict[str, Array] | None = None

    def __call__(self, instance: Instance) -> _RunOutput:
        t0 = time.perf_counter_ns()
        if self.feed is None:
            self.feed = assemble(self.parts, self.names, self.padded_rows)
        t1 = time.perf_counter_ns()
        outputs = instance.run(self.feed)
        t2 = time.perf_counter_ns()
        if not self.batchable:
            return _RunOutput([outputs], t1 - t0, t2 - t1, time.perf_counter_ns() - t2)
        for name, value in outputs.items():
            if value.ndim == 0 or len(value) != self.padded_rows:
                raise EngineFailed(
                    describe(
                        f"output {name!r} has shape {list(value.shape)} for a batch of {self.padded_rows}"
                    )
                )
        parts = split(outputs, self.row_counts)
        return _RunOutput(parts, t1 - t0, t2 - t1, time.perf_counter_ns() - t2)


class LoadedVersion:
    """A version's engines and instances. Its ``inflight`` pin count is guarded by its slot."""

    def __init__(
        self,
        *,
        model: str,
        lifecycle: VersionLifecycle,
        load_id: int,
        engine: Engine,
        fallback: Engine | None,
        config: ModelConfig,
        injectors: Mapping[Route, FaultInjector],
        clock: Clock,
        model_stats: Stats,
    ) -> None:
        self.model, self.version, self.lifecycle, self.load_id = model, lifecycle.version, lifecycle, load_id
        self.config = config
        self.inputs, self.outputs, self.profiles = engine.inputs, engine.outputs, engine.profiles
        self.batchable = is_batchable(self.inputs, self.outputs)
        self.capacity = config.num_instances
        self.router = FallbackRouter(
            has_fallback=fallback is not None, probe_interval_s=config.fallback.probe_interval_s
        )
        self.stats = Stats(model, self.version, parent=model_stats)
        self.inflight = 0
        self.activation_seq = 0
        self._clock = clock
        self._injectors = injectors
        self._names = tuple(spec.name for spec in self.inputs)
        self._max_rows = config.batching.max_batch_size
        batching = config.batching
        self.pad_sizes = pad_sizes(
            batching.preferred_batch_sizes,
            batching.max_batch_size,
            pad_to_preferred=batching.pad_to_preferred,
            prepares_per_shape=prepares_per_shape(engine),
        )
        self.engines: dict[Route, Engine] = {Route.PRIMARY: engine}
        if fallback is not None:
            self.engines[Route.FALLBACK] = fallback
        self.pools: dict[Route, InstancePool] = {}
        self._admitted: dict[object, tuple[int, BatchKey]] = {}

    # -- admission (event loop) ------------------------------------------------------------

    def prepare(self, inputs: Tensors) -> tuple[int, BatchKey]:
        """Check a request's inputs; its rows and batch key. ``InvalidInput`` naming the problem.

        Only the inputs' datatypes and shapes decide admission, so a request whose (datatype,
        shape) signature was admitted before gets the remembered answer (up to 256 signatures)."""
        signature = self._signature(inputs)
        admitted = self._admitted.get(signature) if signature is not None else None
        if admitted is not None:
            return admitted
        result = self._prepare(inputs)
        if signature is not None and len(self._admitted) < _MAX_ADMITTED_SHAPES:
            self._admitted[signature] = result
        return result

    def _signature(self, inputs: Tensors) -> tuple[object, ...] | None:
        """(dtype, shape) per input in model order; ``None`` unless every input is a numpy array."""
        if len(inputs) != len(self._names):
            return None
        signature: list[object] = []
        for name in self._names:
            value = inputs.get(name)
            if type(value) is not np.ndarray:
                return None
            signature += (value.dtype, value.shape)
        return tuple(signature)

    def _prepare(self, inputs: Tensors) -> tuple[int, BatchKey]:
        if len(inputs) != len(self.inputs):
            self._reject(inputs)
        rows = -1
        shapes: list[tuple[int, ...]] = []
        for spec in self.inputs:
            value = inputs.get(spec.name)
            if (
                not isinstance(value, np.ndarray)
                or value.dtype != spec.dtype
                or not spec.accepts_shape(value.shape)
            ):
                self._reject(inputs)
            shape: tuple[int, ...] = value.shape
            if not self.batchable:
                shapes.append(shape)
                continue
            if rows == -1:
                rows = shape[0]
            elif shape[0] != rows:
                raise InvalidInput(
                    describe(
                        f"inputs disagree on the batch size: {spec.name!r} has {shape[0]} rows, not {rows}"
                    )
                )
            shapes.append(shape[1:])
        if self.profiles:
            check_inputs(self.inputs, inputs, self.profiles)
        if not self.batchable:
            return 1, (self.load_id, tuple(shapes))
        if not 1 <= rows <= self._max_rows:
            raise InvalidInput(
                describe(
                    f"request holds {rows} rows",
                    fix=f"send 1..{self._max_rows} rows (max_batch_size) per request",
                )
            )
        return rows, (self.load_id, tuple(shapes))

    def _reject(self, inputs: Mapping[str, object]) -> NoReturn:
        arrays = {k: v for k, v in inputs.items() if isinstance(v, np.ndarray)}
        if len(arrays) != len(inputs):
            bad = sorted(k for k in inputs if k not in arrays)
            raise InvalidInput(
                describe(f"inputs {bad} are not numpy arrays", fix="decode tensors to numpy first")
            )
        check_inputs(self.inputs, arrays, self.profiles)
        raise InvalidInput(describe("inputs do not fit the model", fix=f"expected {list(self.inputs)}"))

    # -- running batches (event loop side; engine work on pool threads) ---------------------

    async def run_batch(
        self, parts: Sequence[Tensors], row_counts: Sequence[int], padded_rows: int, deadline_s: float | None
    ) -> BatchOutcome:
        """Run one batch on the current route, retrying and failing over as :func:`decide_retry` says."""
        job = _BatchJob(parts, row_counts, padded_rows, self._names, self.batchable)
        attempt = 0
        while True:
            route = self.router.route
            try:
                done = await self._pool(route).submit_async(job)
            except Exception as exc:
                decision = decide_retry(
                    classify(exc),
                    attempt=attempt,
                    max_retries=self.config.retry.max_retries,
                    now_s=self._clock.now(),
                    deadline_s=deadline_s,
                    on_fallback=route is Route.FALLBACK,
                    has_fallback=self.router.has_fallback,
                )
                self._after_failure(route, exc, decision)
                if decision.action is RetryAction.FAIL:
                    error = _public_error(exc, decision)
                    if error is exc:
                        raise
                    raise error from exc
                attempt += 1
                continue
            self.stats.record_batch(sum(row_counts), padded_rows, done.infer_ns)
            if route is Route.FALLBACK:
                self.stats.count(Counter.FALLBACK_BATCHES)
            return BatchOutcome(
                done.parts, route.value, attempt, done.input_ns, done.infer_ns, done.output_ns
            )

    def _pool(self, route: Route) -> InstancePool:
        pool = self.pools.get(route)
        if pool is None:
            raise NotReady(describe(f"version {self.version} of {self.model!r} was released", fix="retry"))
        return pool

    def _after_failure(self, route: Route, exc: Exception, decision: RetryDecision) -> None:
        fatal = decision.error_class is ErrorClass.FATAL
        if decision.action is RetryAction.RETRY:
            self.stats.count(Counter.RETRIES)
        if route is Route.PRIMARY and (fatal or decision.action is RetryAction.FALLBACK):
            change = self.router.primary_failed(
                dead=fatal, reason=f"{type(exc).__name__}: {exc}", now_s=self._clock.now()
            )
            if change is not None:
                self.note_change(change)
        log.log(
            logging.INFO if decision.action is RetryAction.RETRY else logging.WARNING,
            "%s:%s batch failed on %s (%s: %s): %s",
            self.model, self.version, route, type(exc).__name__, exc, decision.reason,
        )  # fmt: skip

    def note_change(self, change: RoutingChange) -> None:
        if change.rerouted:
            self.stats.count(Counter.ROUTING_CHANGES)
        log.warning(
            "%s:%s primary is %s, traffic goes to %s: %s",
            self.model, self.version, change.health, change.route, change.reason,
        )  # fmt: skip

    # -- pools (control thread) -------------------------------------------------------------

    def create_instance(self, route: Route) -> Instance:
        return FaultyInstance(self.engines[route].create_instance(), self._injectors[route])

    def start_pools(
        self, feeds: Mapping[Route, Sequence[Tensors]]
    ) -> dict[Route, list[list[dict[str, Array]]]]:
        """Start every pool and warm each instance on its route's ``feeds``; outputs per route and
        instance."""
        outputs: dict[Route, list[list[dict[str, Array]]]] = {}
        for route in self.engines:
            count = (
                self.config.num_instances if route is Route.PRIMARY else self.config.num_fallback_instances
            )
            pool = InstancePool(
                f"{self.model}:{self.version}:{route}",
                partial(self.create_instance, route),
                count,
                on_rebuild=lambda: self.stats.count(Counter.INSTANCE_REBUILDS),
            )
            self.pools[route] = pool
            outputs[route] = pool.start(feeds.get(route, ()))
        return outputs

    def run_once(self, route: Route, feed: Tensors) -> dict[str, Array]:
        """Run one feed on a started pool and wait (control thread only)."""
        return self.pools[route].submit(lambda instance: instance.run(feed)).result()

    def probe_primary(self) -> tuple[bool, str]:
        """Try the primary on a new instance (worker thread); (passed, why)."""
        feed = warmup_batch(self.inputs, self.profiles, 1)

        def probe(instance: Instance) -> None:
            rows = 1 if self.batchable else None
            problems = check_outputs(self.outputs, instance.run(feed), rows, check_finite=True)
            if problems:
                raise EngineFailed("; ".join(problems))

        pool = self.pools.get(Route.PRIMARY)
        if pool is None:
            return False, "the primary has no instances"
        try:
            pool.revive(probe)
        except Exception as exc:
            return False, f"probe failed: {type(exc).__name__}: {exc}"
        return True, "probe passed: the primary runs again"

    def memory_bytes(self) -> int:
        total = 0
        for engine in self.engines.values():
            try:
                total += engine.memory_bytes()
            except Exception:
                log.exception("memory_bytes of %s:%s failed", self.model, self.version)
        return total

    def close(self, timeout_s: float | None = None) -> None:
        """Stop the pools, close the engines, drop every reference to them."""
        stopped = True
        for pool in self.pools.values():
            stopped = pool.close(timeout_s) and stopped
        if stopped:
            for route, engine in self.engines.items():
                try:
                    engine.close()
                except Exception:
                    log.exception("closing the %s engine of %s:%s failed", route, self.model, self.version)
        else:
            log.error(
                "%s:%s: workers still running after %ss; engine left open",
                self.model,
                self.version,
                timeout_s,
            )
        self.pools.clear()
        self.engines.clear()


def _public_error(exc: Exception, decision: RetryDecision) -> Exception:
    if isinstance(exc, EngineDead | EngineFailed):
        return type(exc)(f"{exc} ({decision.reason})")
    if isinstance(exc, KilnError):
        return exc
    return EngineFailed(
        describe(
            "the engine failed to run the batch", seen=f"{type(exc).__name__}: {exc}", fix=decision.reason
        )
    )
