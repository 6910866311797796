"""kiln's load generator: latency histograms, load shapes, targets, reports and plots.

See ``docs/bench.md``. Entry points: :func:`run_bench` (a sweep/rates/soak on one target),
the load shapes :func:`run_closed`, :func:`run_open`, :func:`run_soak`, the targets
:class:`RuntimeTarget`, :class:`EngineTarget` and :class:`KServeTarget`, and the outputs
:func:`render_table`, :func:`render_markdown`, :func:`write_plots`.
"""

from kiln.bench.histogram import LatencyHistogram, LatencySummary
from kiln.bench.inputs import RequestPool, parse_int_range
from kiln.bench.kserve import KServeTarget, RequestFailed
from kiln.bench.load import ClosedLoop, OpenLoop, Pacing, poisson_arrivals, run_closed, run_open
from kiln.bench.machine import Machine, describe_machine
from kiln.bench.report import BenchReport, render_markdown, render_table
from kiln.bench.results import Reply, ServerCounters, ServerSplit, StepResult
from kiln.bench.runner import BenchPlan, BenchProgress, run_bench
from kiln.bench.soak import Marker, MarkerLog, Soak, SoakResult, SwapWindows, TimeWindow, run_soak
from kiln.bench.targets import EngineTarget, RuntimeTarget, Target

__all__ = [
    "BenchPlan",
    "BenchProgress",
    "BenchReport",
    "ClosedLoop",
    "EngineTarget",
    "KServeTarget",
    "LatencyHistogram",
    "LatencySummary",
    "Machine",
    "Marker",
    "MarkerLog",
    "OpenLoop",
    "Pacing",
    "Reply",
    "RequestFailed",
    "RequestPool",
    "RuntimeTarget",
    "ServerCounters",
    "ServerSplit",
    "Soak",
    "SoakResult",
    "StepResult",
    "SwapWindows",
    "Target",
    "TimeWindow",
    "describe_machine",
    "parse_int_range",
    "poisson_arrivals",
    "render_markdown",
    "render_table",
    "run_bench",
    "run_closed",
    "run_open",
    "run_soak",
]
