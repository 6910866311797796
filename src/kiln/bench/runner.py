"""One benchmark of one target: a closed-loop sweep, open-loop rates and an optional soak.

:func:`run_bench` opens the target, runs the steps its :class:`BenchPlan` lists in order (closed
loop at each concurrency, open loop at each rate, then the soak) and returns a
:class:`~kiln.bench.report.BenchReport`. A step that fails on every request is reported and the
benchmark goes on; ``BenchReport.failed_steps`` lists such steps.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Protocol, TypeVar

from kiln.bench.inputs import RequestPool
from kiln.bench.load import ClosedLoop, OpenLoop, Pacing, run_closed, run_open
from kiln.bench.machine import Machine, describe_machine
from kiln.bench.report import BenchReport
from kiln.bench.results import StepResult
from kiln.bench.soak import MarkerLog, Soak, SoakResult, run_soak
from kiln.bench.targets import Target
from kiln.errors import ConfigError, describe
from kiln.types import TensorSpec


class BenchProgress(Protocol):
    """What a progress display is told while a benchmark runs."""

    def start_step(self, label: str, total_s: float) -> None: ...
    def advance(self, elapsed_s: float) -> None: ...
    def end_step(self, result: StepResult) -> None: ...


@dataclass(frozen=True)
class BenchPlan:
    """The steps of one benchmark.

    Attributes:
        concurrency: closed-loop steps, one per value (empty: none).
        rates_per_s: open-loop steps, one per arrival rate (empty: none).
        duration_s / warmup_s: measured and unmeasured seconds of each step.
        soak_s: seconds of the soak at the end (``None``: no soak).
        soak_rate_per_s: the soak's rate; default: the last open-loop rate, else half the best
            closed-loop throughput.
        window_s: the soak's window for latency over time.
        seed: seed of the Poisson arrivals.
    """

    concurrency: tuple[int, ...] = (1,)
    rates_per_s: tuple[float, ...] = ()
    duration_s: float = 10.0
    warmup_s: float = 1.0
    soak_s: float | None = None
    soak_rate_per_s: float | None = None
    window_s: float = 1.0
    seed: int = 0
    pacing: Pacing = field(default_factory=Pacing)

    def __post_init__(self) -> None:
        if not self.concurrency and not self.rates_per_s and self.soak_s is None:
            raise ConfigError(
                describe("the benchmark has no step", fix="give --concurrency, --rate or --soak-s")
            )
        for c in self.concurrency:
            ClosedLoop(c, self.duration_s, self.warmup_s)  # checks the values
        for r in self.rates_per_s:
            OpenLoop(r, self.duration_s, self.warmup_s)


async def run_bench(
    target: Target,
    plan: BenchPlan,
    *,
    requests: RequestPool | Callable[[tuple[TensorSpec, ...]], RequestPool],
    variant: str | None = None,
    model: str = "",
    progress: BenchProgress | None = None,
    markers: MarkerLog | None = None,
    phase_of: Callable[[float], str] | None = None,
) -> BenchReport:
    """Open ``target``, run ``plan``, close the target; the report.

    ``requests`` is a pool, or a function making one from the model's inputs (known once the
    target is open). ``markers``/``phase_of`` are passed to the soak (see :func:`run_soak`).
    """
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    specs = await target.open()
    name = variant or target.description
    steps: list[StepResult] = []
    soaks: dict[str, SoakResult] = {}
    try:
        pool = requests if isinstance(requests, RequestPool) else requests(specs)
        for concurrency in plan.concurrency:
            closed = ClosedLoop(concurrency, plan.duration_s, plan.warmup_s)
            steps.append(await _step(progress, closed.label, plan.warmup_s + plan.duration_s, plan.pacing,
                                     partial(run_closed, target, pool, closed)))  # fmt: skip
        for rate in plan.rates_per_s:
            opened = OpenLoop(rate, plan.duration_s, plan.warmup_s, seed=plan.seed)
            steps.append(await _step(progress, opened.label, plan.warmup_s + plan.duration_s, plan.pacing,
                                     partial(run_open, target, pool, opened)))  # fmt: skip
        if plan.soak_s is not None:
            soak = Soak(_soak_rate(plan, steps), plan.soak_s, window_s=plan.window_s, seed=plan.seed)
            run = partial(run_soak, target, pool, soak, markers=markers, phase_of=phase_of)
            soaks[name] = await _step(
                progress, f"soak {soak.rate_per_s:g}/s", soak.duration_s, plan.pacing, run
            )
    finally:
        await target.aclose()
    return BenchReport(
        title=f"kiln bench: {target.description}",
        model=model,
        machine=describe_machine(),
        started_at=started,
        variants={name: tuple(steps)} if steps else {},
        soaks=soaks,
    )


R = TypeVar("R", StepResult, SoakResult)


async def _step(
    progress: BenchProgress | None,
    label: str,
    total_s: float,
    pacing: Pacing,
    run: Callable[..., Awaitable[R]],
) -> R:
    if progress is not None:
        progress.start_step(label, total_s)
        pacing = replace(pacing, on_tick=progress.advance)
    result = await run(pacing=pacing)
    if progress is not None:
        progress.end_step(result.step if isinstance(result, SoakResult) else result)
    return result


def _soak_rate(plan: BenchPlan, steps: list[StepResult]) -> float:
    if plan.soak_rate_per_s is not None:
        return plan.soak_rate_per_s
    if plan.rates_per_s:
        return plan.rates_per_s[-1]
    best = max((s.throughput_per_s for s in steps), default=0.0)
    if best <= 0:
        raise ConfigError(
            describe("no rate for the soak: no step succeeded", fix="give --soak-rate explicitly")
        )
    return round(best / 2, 1)


__all__ = ["BenchPlan", "BenchProgress", "Machine", "run_bench"]
