"""The soak: a fixed-rate open loop for a fixed duration that also records latency over time.

Latency and errors go into per-window histograms (``window_s``, 1 s by default) keyed by each
request's scheduled arrival, and optionally into *phases*: a classifier maps a request's scheduled
time to a phase name (``steady``/``swap`` for :class:`SwapWindows`), each phase with its own
histogram and error counts. Markers ("load of version 3 started", "version 2 released") come from
whoever drives the system under test through a :class:`MarkerLog`; the soak also marks, on its own,
each new version the target reports serving.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kiln._clock import Clock
from kiln.bench.inputs import RequestPool
from kiln.bench.load import Pacing, _check, open_loop
from kiln.bench.results import Reply, ServerCounters, StepRecorder, StepResult
from kiln.bench.targets import Target


@dataclass(frozen=True, slots=True)
class Soak:
    """``rate_per_s`` Poisson arrivals for ``duration_s`` (all measured), in windows of ``window_s``."""

    rate_per_s: float
    duration_s: float
    window_s: float = 1.0
    seed: int = 0
    max_outstanding: int = 10_000

    def __post_init__(self) -> None:
        _check("rate_per_s", self.rate_per_s, 1e-3, 1e7)
        _check("duration_s", self.duration_s, 1e-3)
        _check("window_s", self.window_s, 1e-3)
        _check("max_outstanding", self.max_outstanding, 1)


@dataclass(frozen=True, slots=True)
class Marker:
    """Something that happened at ``at_s`` seconds into a soak: ``kind`` (e.g. ``load-start``,
    ``active``, ``released``, ``serving``, ``fault``) and a human ``label``."""

    at_s: float
    kind: str
    label: str

    def to_json(self) -> dict[str, object]:
        return {"at_s": self.at_s, "kind": self.kind, "label": self.label}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Marker:
        return cls(float(data["at_s"]), str(data["kind"]), str(data["label"]))  # type: ignore[arg-type]


class MarkerLog:
    """Markers stamped with a clock; :meth:`mark` may be called from any thread."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.origin = clock.now()
        self._lock = threading.Lock()
        self._marks: list[tuple[float, str, str]] = []

    def restart(self) -> None:
        """Count times from now (the soak calls this when it starts)."""
        self.origin = self.clock.now()

    def mark(self, kind: str, label: str) -> None:
        with self._lock:
            self._marks.append((self.clock.now(), kind, label))

    def __len__(self) -> int:
        return len(self._marks)

    def raw(self) -> list[tuple[float, str, str]]:
        """(absolute clock time, kind, label) of every marker, oldest first."""
        with self._lock:
            return sorted(self._marks)

    def markers(self) -> tuple[Marker, ...]:
        return tuple(Marker(t - self.origin, kind, label) for t, kind, label in self.raw())


class SwapWindows:
    """Classifies times as ``swap`` or ``steady``. A swap window runs from a ``start_kind`` marker
    (a new version starts loading) to ``after_s`` seconds past the next ``end_kind`` marker (the
    old version was released); one still open (no release yet) reaches to now.

    Requests are classified when they end, so every marker at or before their scheduled time is
    known; a release later than that only moves the window's end past the request's time.
    """

    def __init__(
        self,
        log: MarkerLog,
        *,
        after_s: float = 1.0,
        start_kind: str = "load-start",
        end_kind: str = "released",
    ) -> None:
        self.log, self.after_s = log, after_s
        self.start_kind, self.end_kind = start_kind, end_kind
        self._seen = -1
        self._starts: list[float] = []
        self._ends: list[float] = []

    def windows(self) -> list[tuple[float, float]]:
        """``(start, end)`` absolute clock times of every window so far (``end`` inf when open)."""
        if len(self.log) != self._seen:
            self._rebuild()
        return list(zip(self._starts, self._ends, strict=True))

    def _rebuild(self) -> None:
        marks = self.log.raw()
        self._seen = len(marks)
        starts: list[float] = []
        ends: list[float] = []
        for t, kind, _ in marks:
            if kind == self.start_kind and len(starts) == len(ends):
                starts.append(t)
            elif kind == self.end_kind and len(starts) == len(ends) + 1:
                ends.append(t + self.after_s)
        if len(starts) > len(ends):
            ends.append(float("inf"))
        self._starts, self._ends = starts, ends

    def __call__(self, at: float) -> str:
        self.windows()
        i = bisect.bisect_right(self._starts, at) - 1
        return "swap" if i >= 0 and at <= self._ends[i] else "steady"


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """One window of a soak: requests scheduled in ``[start_s, start_s + window_s)``."""

    start_s: float
    ok: int
    failed: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    def to_json(self) -> dict[str, object]:
        return {
            "start_s": self.start_s, "ok": self.ok, "failed": self.failed,
            "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "max_ms": self.max_ms,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> TimeWindow:
        f = {k: float(data[k]) for k in ("start_s", "p50_ms", "p99_ms", "max_ms")}  # type: ignore[arg-type]
        return cls(f["start_s"], int(data["ok"]), int(data["failed"]), f["p50_ms"], f["p99_ms"], f["max_ms"])  # type: ignore[call-overload]


@dataclass(frozen=True)
class SoakResult:
    """The whole soak (``step``), its windows over time, the markers, and one result per phase."""

    step: StepResult
    window_s: float
    windows: tuple[TimeWindow, ...]
    markers: tuple[Marker, ...]
    phases: Mapping[str, StepResult]

    def to_json(self) -> dict[str, object]:
        return {
            "step": self.step.to_json(),
            "window_s": self.window_s,
            "windows": [w.to_json() for w in self.windows],
            "markers": [m.to_json() for m in self.markers],
            "phases": {name: r.to_json() for name, r in self.phases.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> SoakResult:
        return cls(
            step=StepResult.from_json(data["step"]),  # type: ignore[arg-type]
            window_s=float(data["window_s"]),  # type: ignore[arg-type]
            windows=tuple(TimeWindow.from_json(w) for w in data["windows"]),  # type: ignore[attr-defined]
            markers=tuple(Marker.from_json(m) for m in data["markers"]),  # type: ignore[attr-defined]
            phases={str(k): StepResult.from_json(v) for k, v in dict(data["phases"]).items()},  # type: ignore[call-overload]
        )


class _SoakRecorder:
    def __init__(self, spec: Soak, start: float, log: MarkerLog, phase_of: Callable[[float], str] | None):
        self.spec, self.start, self.log, self.phase_of = spec, start, log, phase_of
        self.total = StepRecorder()
        self.windows: dict[int, StepRecorder] = {}
        self.phases: dict[str, StepRecorder] = {}
        self.version: str | None = None

    def __call__(self, offset: float, latency_ns: int | None, kind: str | None, reply: Reply | None) -> None:
        window = self.windows.setdefault(int(offset // self.spec.window_s), StepRecorder())
        targets = [self.total, window]
        if self.phase_of is not None:
            targets.append(self.phases.setdefault(self.phase_of(self.start + offset), StepRecorder()))
        self.total.last_done_s = self.log.clock.now()
        for recorder in targets:
            if kind is not None:
                recorder.failure(kind)
            elif latency_ns is not None and reply is not None:
                recorder.success(latency_ns, reply)
        if reply is not None and reply.version is not None and reply.version != self.version:
            self.version = reply.version
            self.log.mark("serving", f"serving version {reply.version}")

    def result(self, spec: Soak, counters: ServerCounters | None = None) -> SoakResult:
        rate = spec.rate_per_s
        windows = []
        for index in sorted(self.windows):
            w = self.windows[index]
            s = w.latency.summary()
            windows.append(
                TimeWindow(index * spec.window_s, w.ok, sum(w.errors.values()), s.p50_ms, s.p99_ms, s.max_ms)
            )
        phases = {
            name: r.result(name, "soak", spec.duration_s, rate_per_s=rate)
            for name, r in sorted(self.phases.items())
        }
        duration_s = self.total.span_s(self.start, spec.duration_s)
        step = self.total.result(f"soak {rate:g}/s", "soak", duration_s, rate_per_s=rate, counters=counters)
        return SoakResult(step, spec.window_s, tuple(windows), self.log.markers(), phases)


async def run_soak(
    target: Target,
    requests: RequestPool,
    spec: Soak,
    *,
    markers: MarkerLog | None = None,
    phase_of: Callable[[float], str] | None = None,
    pacing: Pacing | None = None,
) -> SoakResult:
    """Run a soak. ``markers`` collects events from the caller (its clock should be the pacing's);
    ``phase_of`` maps an absolute scheduled time to a phase name (e.g. a :class:`SwapWindows`).
    A phase's duration is the soak's: compare phases by latency, not throughput."""
    pacing = pacing or Pacing()
    log = markers if markers is not None else MarkerLog(pacing.clock)
    start = pacing.clock.now()
    log.restart()
    recorder = _SoakRecorder(spec, start, log, phase_of)
    counters = await open_loop(
        target,
        requests,
        rate_per_s=spec.rate_per_s,
        total_s=spec.duration_s,
        measure_from_s=0.0,
        seed=spec.seed,
        max_outstanding=spec.max_outstanding,
        done=recorder,
        pacing=pacing,
    )
    return recorder.result(spec, counters)
