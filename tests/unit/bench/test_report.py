"""Reports: JSON round trip, table, Markdown, failed steps; plots are written and readable."""

from __future__ import annotations

import io
import json
from pathlib import Path

import matplotlib.image
import pytest
from rich.console import Console

from kiln.bench.histogram import LatencyHistogram
from kiln.bench.machine import Machine, describe_machine
from kiln.bench.plots import write_plots
from kiln.bench.report import BenchReport, render_markdown, render_table
from kiln.bench.results import ServerSplit, StepResult
from kiln.bench.soak import Marker, SoakResult, TimeWindow
from kiln.errors import ConfigError

MACHINE = Machine("Test CPU", 2, (0.5, 0.4, 0.3), "3.11", "1.31", "Linux")


def step(
    label: str, ms: float, ok: int = 100, errors: dict[str, int] | None = None, **kw: object
) -> StepResult:
    return StepResult(
        label=label,
        shape=kw.pop("shape", "closed"),  # type: ignore[arg-type]
        duration_s=1.0,
        ok=ok,
        errors=errors or {},
        latency=LatencyHistogram.of([ms / 1000] * ok),
        split=ServerSplit("per-request", 0.25, 0.5, 0.3, 0.6),
        **kw,  # type: ignore[arg-type]
    )


def report() -> BenchReport:
    soak_step = step("soak 50/s", 2.0, ok=150, shape="soak", rate_per_s=50.0)
    soak = SoakResult(
        soak_step,
        1.0,
        (
            TimeWindow(0.0, 50, 0, 1.9, 2.1, 2.2),
            TimeWindow(1.0, 49, 1, 2.0, 3.0, 3.3),
            TimeWindow(2.0, 51, 0, 2, 2, 2),
        ),
        (
            Marker(0.9, "load-start", "load v2"),
            Marker(1.2, "active", "v2 active"),
            Marker(1.3, "fault", "fail 1"),
        ),
        {"steady": step("steady", 2.0, ok=100, shape="soak"), "swap": step("swap", 3.0, ok=50, shape="soak")},
    )
    return BenchReport(
        title="kiln bench: test",
        model="ctr",
        machine=MACHINE,
        started_at="2026-01-01T00:00:00+00:00",
        variants={
            "batching": (step("c=1", 1.0, concurrency=1), step("c=8", 2.0, concurrency=8)),
            "one per run": (step("c=1", 1.5, concurrency=1), step("c=8", 0.0, ok=0, errors={"HTTP 503": 7})),
        },
        soaks={"swap soak": soak},
        notes=("a note",),
    )


def test_json_round_trip(tmp_path: Path) -> None:
    original = report()
    path = tmp_path / "out" / "report.json"
    original.write_json(path)
    data = json.loads(path.read_text())
    assert data["variants"]["batching"][1]["latency_ms"]["p99_ms"] == pytest.approx(2.0, rel=0.01)
    again = BenchReport.read_json(path)
    assert again.to_json() == original.to_json()
    assert not list(tmp_path.glob("out/.*.tmp"))


def test_failed_steps_are_the_ones_without_any_success() -> None:
    failed = report().failed_steps
    assert [(name, s.label) for name, s in failed] == [("one per run", "c=8")]


def test_markdown_lists_every_step_and_the_machine() -> None:
    text = render_markdown(report())
    assert "Test CPU, 2 cores, load 0.50/0.40/0.30" in text
    assert "| batching | c=8 | 100 | 0 | 100.0 |" in text
    assert "| one per run | c=8 | 0 | 7 | 0.0 | - |" in text
    assert "HTTP 503: 7" in text
    assert "|   swap |" in text or "| swap soak |   swap |" in text
    assert "markers: active ×1, fault ×1, load-start ×1" in text
    assert "- a note" in text


def test_table_renders() -> None:
    out = io.StringIO()
    render_table(report(), Console(file=out, width=200))
    text = out.getvalue()
    assert "kiln bench: test" in text
    assert "one per run" in text
    assert "3 marker(s)" in text


def test_plots_are_written_and_readable(tmp_path: Path) -> None:
    written = write_plots(report(), tmp_path / "plot.png")
    assert [p.name for p in written] == ["plot.png", "plot-soak.png"]
    for path in written:
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 300
        assert image.shape[1] > 600


def test_reading_something_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"format": 99}')
    with pytest.raises(ConfigError, match="not a kiln bench report"):
        BenchReport.read_json(path)


def test_machine_is_described() -> None:
    machine = describe_machine()
    assert machine.cores >= 1
    assert Machine.from_json(machine.to_json()) == machine
