"""Building a version's engines off the serving process: one :class:`BuildJob` in, a
:class:`BuildOutcome` out, through a :class:`Builder`.

:class:`ProcessBuilder` (the default) runs jobs in a spawned worker process at a lower CPU priority
(``os.nice``), so calibration, the fp32 reference and the accuracy check never take the GIL or a
core from the requests being served. :class:`ThreadBuilder` runs them on a worker thread (tests,
or where processes cannot be spawned). Either way :func:`run_build_job` goes through
:func:`kiln.cache.pipeline.build_engine`, so a weight-only retrain takes the cache's refit or
calibration-reuse path. Engines are *loaded* in the serving process afterwards, from the
artifacts the outcome names.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
import traceback
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeAlias

from kiln.cache.builder import BuildReport
from kiln.cache.pipeline import BuildRequest, build_engine
from kiln.compile.spec import BuildSpec
from kiln.errors import KilnError

log = logging.getLogger("kiln.repository")

BuildIn: TypeAlias = Literal["process", "thread"]
DEFAULT_NICE = 10
MAX_JOBS_PER_PROCESS = 50


@dataclass(frozen=True)
class BuildJob:
    """One version to build: its model file, the primary spec, the optional fallback spec, the
    sample folders (absolute) and the engine cache folder (``None``: kiln's default)."""

    model: str
    version: str
    model_file: Path
    spec: BuildSpec
    fallback: BuildSpec | None = None
    calibration: Path | None = None
    validation: Path | None = None
    cache: Path | None = None
    lock_timeout_s: float | None = None


@dataclass(frozen=True)
class BuildOutcome:
    """What a job gave: the cache's reports (primary, fallback) or the error, and the wall time."""

    job: BuildJob
    primary: BuildReport | None
    fallback: BuildReport | None
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.primary is not None

    def summary(self) -> str:
        """One line for the index: how each engine was obtained and its accuracy."""
        if self.primary is None:
            return self.error or "no engine"
        text = _describe(self.job.spec, self.primary)
        if self.fallback is not None and self.job.fallback is not None:
            text += "; fallback " + _describe(self.job.fallback, self.fallback)
        return text


def _describe(spec: BuildSpec, report: BuildReport) -> str:
    text = f"{spec.precision} {spec.backend} engine by {report.path} in {report.build_seconds:.2f} s"
    accuracy = report.accuracy or {}
    drop = accuracy.get("drop")
    if isinstance(drop, int | float) and math.isfinite(drop):
        bound = accuracy.get("max_accuracy_drop")
        text += f", accuracy drop {drop:.4g}" + (
            f" (bound {bound:g})" if isinstance(bound, int | float) else ""
        )
    return text


def run_build_job(job: BuildJob) -> BuildOutcome:
    """Build ``job`` through the engine cache. Never raises: a failure is the outcome's ``error``
    (``"AccuracyError: ..."``), ready to show in the index."""
    started = time.perf_counter()
    try:
        primary = build_engine(
            BuildRequest(
                job.model_file,
                job.spec,
                calibration=job.calibration if job.spec.precision == "int8" else None,
                validation=job.validation,
                cache=job.cache,
                lock_timeout_s=job.lock_timeout_s,
            )
        )
        fallback = None
        if job.fallback is not None:
            fallback = build_engine(
                BuildRequest(
                    job.model_file,
                    job.fallback,
                    calibration=job.calibration if job.fallback.precision == "int8" else None,
                    validation=job.validation,
                    cache=job.cache,
                    lock_timeout_s=job.lock_timeout_s,
                )
            )
    except KilnError as exc:
        return BuildOutcome(job, None, None, time.perf_counter() - started, error=failure_text(exc))
    except Exception as exc:
        log.error("building %s/%s failed:\n%s", job.model, job.version, traceback.format_exc())
        return BuildOutcome(job, None, None, time.perf_counter() - started, error=failure_text(exc))
    return BuildOutcome(job, primary, fallback, time.perf_counter() - started)


def failure_text(exc: BaseException) -> str:
    """``Kind: message`` on one line."""
    message = " ".join(str(exc).split()) or "(no message)"
    return f"build failed: {type(exc).__name__}: {message}"


class Builder(Protocol):
    """Runs build jobs off the event loop and off the request path."""

    def submit(self, job: BuildJob) -> Future[BuildOutcome]:
        """Start ``job``; the future always resolves to an outcome (a crash is its ``error``)."""

    def shutdown(self) -> None:
        """Stop the workers (a running job is abandoned)."""


class _ExecutorBuilder:
    def __init__(self) -> None:
        self._executor: Executor | None = None

    def _create(self) -> Executor:
        raise NotImplementedError

    def submit(self, job: BuildJob) -> Future[BuildOutcome]:
        if self._executor is None:
            self._executor = self._create()
        outer: Future[BuildOutcome] = Future()
        inner = self._executor.submit(run_build_job, job)
        inner.add_done_callback(lambda done: self._deliver(job, done, outer))
        return outer

    def _deliver(self, job: BuildJob, done: Future[BuildOutcome], outer: Future[BuildOutcome]) -> None:
        try:
            outer.set_result(done.result())
        except BaseException as exc:  # the worker died (out of memory, killed) or was shut down
            log.error("the build of %s/%s did not finish: %r", job.model, job.version, exc)
            self._executor = None
            error = f"build failed: the build worker stopped ({type(exc).__name__}: {exc})"
            outer.set_result(BuildOutcome(job, None, None, 0.0, error=error))

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


class ProcessBuilder(_ExecutorBuilder):
    """Builds in spawned worker processes running at ``nice`` (lower priority than serving)."""

    def __init__(self, max_workers: int = 1, *, nice: int = DEFAULT_NICE) -> None:
        super().__init__()
        self.max_workers, self.nice = max_workers, nice

    def _create(self) -> Executor:
        return ProcessPoolExecutor(
            self.max_workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_lower_priority,
            initargs=(self.nice,),
            max_tasks_per_child=MAX_JOBS_PER_PROCESS,
        )


class ThreadBuilder(_ExecutorBuilder):
    """Builds on worker threads of the serving process."""

    def __init__(self, max_workers: int = 1) -> None:
        super().__init__()
        self.max_workers = max_workers

    def _create(self) -> Executor:
        return ThreadPoolExecutor(self.max_workers, thread_name_prefix="kiln-build")


def create_builder(kind: BuildIn = "process", *, max_workers: int = 1, nice: int = DEFAULT_NICE) -> Builder:
    """The builder called ``kind``: ``process`` (spawned, niced workers) or ``thread``."""
    if kind == "process":
        return ProcessBuilder(max_workers, nice=nice)
    return ThreadBuilder(max_workers)


def _lower_priority(nice: int) -> None:
    try:
        os.nice(nice)
    except OSError:  # pragma: no cover - not permitted here: build at the same priority
        log.warning("could not lower the build process's priority")
