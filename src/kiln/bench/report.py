"""A benchmark's report: JSON for machines, a terminal table and Markdown for people.

A report holds *variants* (named lists of load steps, e.g. ``batching`` and ``one request per
run``: each becomes one line of the latency-throughput plot) and *soaks* (latency over time, with
markers, and per-phase results).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kiln.bench.machine import Machine
from kiln.bench.results import StepResult
from kiln.bench.soak import SoakResult
from kiln.errors import ConfigError, describe

REPORT_FORMAT = 1
COLUMNS = (
    "variant", "step", "ok", "failed", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms",
    "queue ms", "compute ms", "errors",
)  # fmt: skip


@dataclass(frozen=True)
class BenchReport:
    """Everything one benchmark run measured, and where."""

    title: str
    model: str
    machine: Machine
    started_at: str
    variants: Mapping[str, tuple[StepResult, ...]] = field(default_factory=dict)
    soaks: Mapping[str, SoakResult] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def failed_steps(self) -> list[tuple[str, StepResult]]:
        """Steps in which every request failed (variant, step)."""
        found = [(name, s) for name, steps in self.variants.items() for s in steps if s.ok == 0 and s.failed]
        found += [(name, s.step) for name, s in self.soaks.items() if s.step.ok == 0 and s.step.failed]
        return found

    def merged(self, other: BenchReport) -> BenchReport:
        """This report with ``other``'s variants, soaks and notes added (same names: ``other`` wins)."""
        return BenchReport(
            self.title,
            self.model,
            self.machine,
            self.started_at,
            {**self.variants, **other.variants},
            {**self.soaks, **other.soaks},
            self.notes + other.notes,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "format": REPORT_FORMAT,
            "title": self.title,
            "model": self.model,
            "machine": self.machine.to_json(),
            "started_at": self.started_at,
            "variants": {name: [s.to_json() for s in steps] for name, steps in self.variants.items()},
            "soaks": {name: s.to_json() for name, s in self.soaks.items()},
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> BenchReport:
        if data.get("format") != REPORT_FORMAT:
            raise ConfigError(
                describe(
                    "not a kiln bench report", seen=data.get("format"), fix="pass a --json file of kiln bench"
                )
            )
        variants = data["variants"]
        soaks = data["soaks"]
        assert isinstance(variants, dict)
        assert isinstance(soaks, dict)
        return cls(
            title=str(data["title"]),
            model=str(data["model"]),
            machine=Machine.from_json(data["machine"]),  # type: ignore[arg-type]
            started_at=str(data["started_at"]),
            variants={str(k): tuple(StepResult.from_json(s) for s in v) for k, v in variants.items()},
            soaks={str(k): SoakResult.from_json(v) for k, v in soaks.items()},
            notes=tuple(str(n) for n in data.get("notes") or []),  # type: ignore[attr-defined]
        )

    def write_json(self, path: Path) -> None:
        _write_atomic(Path(path), json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def read_json(cls, path: Path) -> BenchReport:
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(describe(f"cannot read bench report {path}", seen=str(exc))) from None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def step_row(variant: str, step: StepResult) -> list[str]:
    """One row of :data:`COLUMNS` for a step."""
    s = step.summary
    split = step.split
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(step.errors.items())) or "-"
    ok = step.ok > 0
    return [
        variant,
        step.label,
        str(step.ok),
        str(step.failed),
        f"{step.throughput_per_s:.1f}",
        *(_fmt(v if ok else None, 3) for v in (s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.max_ms)),
        _fmt(None if split is None else split.queue_mean_ms, 3),
        _fmt(None if split is None else split.compute_mean_ms, 3),
        errors,
    ]


def _rows(report: BenchReport) -> Iterable[list[str]]:
    for name, steps in report.variants.items():
        for step in steps:
            yield step_row(name, step)
    for name, soak in report.soaks.items():
        yield step_row(name, soak.step)
        for phase, step in soak.phases.items():
            row = step_row(name, _relabel(step, f"  {phase}"))
            row[4] = "-"  # a phase spans parts of the soak: compare phases by latency
            yield row


def _relabel(step: StepResult, label: str) -> StepResult:
    return StepResult(
        label, step.shape, step.duration_s, step.ok, step.errors, step.latency,
        step.concurrency, step.rate_per_s, step.split, step.versions,
    )  # fmt: skip


def render_table(report: BenchReport, console: Console | None = None) -> None:
    """Print the report as a table (queue/compute: mean server-side split, when known)."""
    table = Table(title=report.title, caption=f"{report.machine.line()}; started {report.started_at}")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("variant", "step", "errors") else "right")
    for row in _rows(report):
        style = "red" if row[2] == "0" and row[3] != "0" else None
        table.add_row(*row, style=style)
    (console or Console()).print(table)
    for name, soak in report.soaks.items():
        if soak.markers:
            (console or Console()).print(f"{name}: {len(soak.markers)} marker(s) during the soak")


def render_markdown(report: BenchReport) -> str:
    """The report as Markdown: a header, the machine, one table of every step, the markers."""
    lines = [f"## {report.title}", ""]
    if report.model:
        lines.append(f"Model: `{report.model}`  ")
    lines += [f"Machine: {report.machine.line()}  ", f"Started: {report.started_at}", ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in _rows(report)]
    for name, soak in report.soaks.items():
        if soak.markers:
            kinds: dict[str, int] = {}
            for marker in soak.markers:
                kinds[marker.kind] = kinds.get(marker.kind, 0) + 1
            listed = ", ".join(f"{kind} ×{n}" for kind, n in sorted(kinds.items()))
            lines += [
                "",
                f"Soak `{name}`: {len(soak.windows)} windows of {soak.window_s:g} s; markers: {listed}.",
            ]
    if report.notes:
        lines += ["", *[f"- {note}" for note in report.notes]]
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
