"""Bringing a new version up off the request path: load, fit check, warm-up, sanity check.

``build_version`` walks a version through LOADING -> WARMING -> READY on a control thread. A version
failing any step is moved to FAILED with the reason, everything it holds is released, and it never
serves. :class:`VersionHandle` lets callers poll or await such an operation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TypeAlias, cast

from kiln.compile.backends.base import Engine, prepares_per_shape
from kiln.errors import ConfigError, describe
from kiln.runtime.checks import GoldenSet, check_outputs, compare_golden, warmup_batch
from kiln.runtime.engine import LoadedVersion
from kiln.runtime.fallback import Route
from kiln.runtime.lifecycle import VersionLifecycle, VersionState, VersionStatus
from kiln.runtime.memory import budget_problem
from kiln.runtime.warmup import WarmupPlan, warmup_plan
from kiln.types import Array

log = logging.getLogger("kiln.runtime")

EngineSource: TypeAlias = Engine | Callable[[], Engine]
"""A loaded engine, or a factory that loads one (called on the control thread). The runtime owns
the engine from then on and closes it when the version is released. Only factories can be loaded
again by ``rollback()`` once the version was released."""


def _is_engine(source: object) -> bool:
    return hasattr(source, "create_instance")


def resolve_engine(source: EngineSource) -> Engine:
    if _is_engine(source):
        return cast(Engine, source)
    if callable(source):
        engine = source()
        if _is_engine(engine):
            return engine
        raise ConfigError(
            describe(
                "the engine factory returned no engine", seen=type(engine).__name__, fix="return an Engine"
            )
        )
    raise ConfigError(
        describe("not an engine", seen=type(source).__name__, fix="give an Engine or a factory")
    )


@dataclass(frozen=True)
class VersionSource:
    """Where one version's engines come from, and the golden set it must reproduce."""

    version: str
    engine: EngineSource
    fallback: EngineSource | None = None
    golden: GoldenSet | None = None

    @property
    def reloadable(self) -> bool:
        return not _is_engine(self.engine) and not _is_engine(self.fallback)


class VersionHandle:
    """A version operation (load, rollback, unload) running off the request path.

    Poll ``state``/``done()``, or wait: ``await handle.wait()`` on the event loop, ``result()``
    from other threads. Both give the version's final :class:`VersionStatus`; a failed load is a
    status with state FAILED and its reason, not an exception.
    """

    def __init__(
        self, version: str, future: Future[VersionStatus], lifecycle: VersionLifecycle | None
    ) -> None:
        self._version = version
        self._future = future
        self._lifecycle = lifecycle

    @property
    def version(self) -> str:
        """The version this operation acts on (for a rollback: the one it rolls back to)."""
        return self._version if self._lifecycle is None else self._lifecycle.version

    @property
    def state(self) -> VersionState | None:
        """The version's state now (``None`` until the operation has picked its version)."""
        return None if self._lifecycle is None else self._lifecycle.state

    @property
    def reason(self) -> str | None:
        return None if self._lifecycle is None else self._lifecycle.reason

    def attach(self, lifecycle: VersionLifecycle) -> None:
        self._lifecycle = lifecycle

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout_s: float | None = None) -> VersionStatus:
        """Block until done (never call this on the event loop; use :meth:`wait`)."""
        return self._future.result(timeout_s)

    async def wait(self, timeout_s: float | None = None) -> VersionStatus:
        """Wait until done without blocking the loop; ``TimeoutError`` leaves the operation running."""
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self._future)), timeout_s)


def build_version(
    source: VersionSource,
    lifecycle: VersionLifecycle,
    make: Callable[[Engine, Engine | None], LoadedVersion],
    *,
    check_finite: bool,
    resident_bytes: Callable[[], int] | None = None,
) -> LoadedVersion | None:
    """LOADING -> WARMING -> READY; ``None`` (and FAILED with the reason) when a step fails.

    ``resident_bytes`` reports what the model's other resident versions hold, for the memory budget
    (``ModelConfig.max_memory_bytes``), checked after loading and again after the warm-up."""
    engines: list[Engine] = []
    try:
        engines.append(resolve_engine(source.engine))
        if source.fallback is not None:
            engines.append(resolve_engine(source.fallback))
        version = make(engines[0], engines[1] if len(engines) > 1 else None)
    except Exception as exc:
        _close_engines(engines)
        _fail(lifecycle, f"load failed: {type(exc).__name__}: {exc}", None)
        return None
    problems = fit_problems(version) + _budget(version, "for its engines", resident_bytes)
    if problems:
        _fail(lifecycle, "does not fit the model: " + "; ".join(problems), version)
        return None
    lifecycle.move(VersionState.WARMING)
    plans = warmup_plans(version)
    feeds = {
        route: [warmup_batch(version.inputs, version.profiles, rows) for rows in plan.sizes]
        for route, plan in plans.items()
    }
    try:
        warm = version.start_pools(feeds)
    except Exception as exc:
        _fail(lifecycle, f"warm-up failed: {type(exc).__name__}: {exc}", version)
        return None
    problems = _warmup_problems(version, plans, warm, check_finite)
    problems = problems or _budget(version, "with its instances warmed up", resident_bytes)
    if not problems and source.golden is not None:
        problems = _golden_problems(version, source.golden)
    if problems:
        _fail(lifecycle, "check failed: " + "; ".join(problems), version)
        return None
    lifecycle.move(VersionState.READY)
    return version


def warmup_plans(version: LoadedVersion) -> dict[Route, WarmupPlan]:
    """Each engine's warm-up plan (:func:`warmup_plan`), from what it declares and the model config."""
    plans: dict[Route, WarmupPlan] = {}
    for route, engine in version.engines.items():
        plans[route] = warmup_plan(
            prepares_per_shape=prepares_per_shape(engine),
            batching=version.config.batching,
            configured=version.config.versions.warmup_batch_sizes,
            batchable=version.batchable,
        )
        log.info("%s:%s warms the %s on %s", version.model, version.version, route, plans[route].describe())
    return plans


def fit_problems(version: LoadedVersion) -> list[str]:
    """Why this version cannot serve under the model's config (empty: it can)."""
    max_rows = version.config.batching.max_batch_size
    primary = version.engines[Route.PRIMARY]
    problems: list[str] = []
    if not version.batchable and max_rows > 1:
        problems.append("the engine has no batch axis (-1 first dim on every tensor); set max_batch_size 1")
    if version.batchable and 0 < primary.max_batch_size < max_rows:
        problems.append(f"engine max_batch_size {primary.max_batch_size} < model max_batch_size {max_rows}")
    for profile in version.profiles:
        if version.batchable and profile.max[0] < max_rows:
            problems.append(
                f"profile of {profile.input!r} allows {profile.max[0]} rows < max_batch_size {max_rows}"
            )
    fallback = version.engines.get(Route.FALLBACK)
    if fallback is not None:
        want = [(s.name, s.datatype) for s in (*primary.inputs, *primary.outputs)]
        got = [(s.name, s.datatype) for s in (*fallback.inputs, *fallback.outputs)]
        if want != got:
            problems.append(f"fallback signature {got} differs from the primary's {want}")
    return problems


def _budget(version: LoadedVersion, stage: str, resident_bytes: Callable[[], int] | None) -> list[str]:
    budget = version.config.max_memory_bytes
    if budget is None:
        return []
    problem = budget_problem(
        model=version.model,
        version=version.version,
        stage=stage,
        new_bytes=version.memory_bytes(),
        resident_bytes=resident_bytes() if resident_bytes is not None else 0,
        budget_bytes=budget,
    )
    return [problem] if problem else []


def _warmup_problems(
    version: LoadedVersion,
    plans: Mapping[Route, WarmupPlan],
    warm: dict[Route, list[list[dict[str, Array]]]],
    check_finite: bool,
) -> list[str]:
    found: dict[str, None] = {}
    for route, per_instance in warm.items():
        for outputs in per_instance:
            for rows, out in zip(plans[route].sizes, outputs, strict=True):
                expected_rows = rows if version.batchable else None
                for problem in check_outputs(version.outputs, out, expected_rows, check_finite=check_finite):
                    found[f"{route} batch {rows}: {problem}"] = None
    return list(found)


def _golden_problems(version: LoadedVersion, golden: GoldenSet) -> list[str]:
    problems: list[str] = []
    for route in version.pools:
        try:
            outputs = version.run_once(route, golden.inputs)
        except Exception as exc:
            problems.append(f"{route} golden run failed: {type(exc).__name__}: {exc}")
            continue
        problems += [f"{route}: {p}" for p in compare_golden(golden, outputs)]
    return problems


def _fail(lifecycle: VersionLifecycle, reason: str, version: LoadedVersion | None) -> None:
    log.error("version %s failed and will not serve: %s", lifecycle.version, reason)
    if version is not None:
        version.close()
    lifecycle.move(VersionState.FAILED, reason)


def _close_engines(engines: list[Engine]) -> None:
    for engine in engines:
        try:
            engine.close()
        except Exception:
            log.exception("closing an engine of a failed load failed")
