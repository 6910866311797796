"""PNG plots of a benchmark (matplotlib, Agg backend: no display needed).

* latency-throughput: x = throughput (requests/s), y = p99 latency (ms), one line per variant;
* latency over time: p50 and p99 per soak window, with a vertical line where a version was swapped
  (``active`` markers) and where faults were injected (``fault`` markers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from kiln.bench.report import BenchReport
from kiln.bench.results import StepResult
from kiln.bench.soak import SoakResult

MARKER_STYLES = {"active": ("tab:red", "version swapped"), "fault": ("tab:purple", "fault injected")}


def plot_latency_throughput(
    variants: Mapping[str, Sequence[StepResult]], path: Path, *, title: str, percentile: float = 99.0
) -> Path:
    """One line per variant through its steps in the order of the load offered (x throughput, y the
    latency percentile): past saturation the line bends back, as throughput stops growing."""
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    values: list[float] = []
    for name, steps in _lines(variants).items():
        ordered = sorted((s for s in steps if s.ok > 0), key=lambda s: s.rate_per_s or s.concurrency or 0)
        points = [(s.throughput_per_s, s.latency.percentile_ms(percentile), s.label) for s in ordered]
        if not points:
            continue
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        values += ys
        ax.plot(xs, ys, marker="o", label=name)
        for x, y, label in points:
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, alpha=0.7)
    if values and max(values) / max(min(values), 1e-9) > 30:
        ax.set_yscale("log")
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel(f"p{percentile:g} latency (ms)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if variants:
        ax.legend(loc="best")
    return _save(fig, path)


def _lines(variants: Mapping[str, Sequence[StepResult]]) -> dict[str, list[StepResult]]:
    """One line per variant, split by load shape when a variant mixes closed and open steps."""
    lines: dict[str, list[StepResult]] = {}
    for name, steps in variants.items():
        shapes = {s.shape for s in steps}
        for step in steps:
            key = name if len(shapes) == 1 else f"{name} ({step.shape} loop)"
            lines.setdefault(key, []).append(step)
    return lines


def plot_timeline(soak: SoakResult, path: Path, *, title: str) -> Path:
    """p50 and p99 latency per window over the soak, with vertical lines at swap and fault markers."""
    fig, ax = plt.subplots(figsize=(10, 5), dpi=110)
    windows = [w for w in soak.windows if w.ok > 0]
    times = [w.start_s + soak.window_s / 2 for w in windows]
    ax.plot(times, [w.p99_ms for w in windows], label="p99", color="tab:orange")
    ax.plot(times, [w.p50_ms for w in windows], label="p50", color="tab:blue")
    labelled: set[str] = set()
    for marker in soak.markers:
        style = MARKER_STYLES.get(marker.kind)
        if style is None:
            continue
        color, name = style
        ax.axvline(marker.at_s, color=color, alpha=0.35, linewidth=0.8, linestyle="--",
                   label=None if name in labelled else name)  # fmt: skip
        labelled.add(name)
    failed = [(w.start_s + soak.window_s / 2, w.failed) for w in soak.windows if w.failed]
    if failed:
        twin = ax.twinx()
        twin.bar(
            [f[0] for f in failed],
            [f[1] for f in failed],
            width=soak.window_s * 0.8,
            color="tab:red",
            alpha=0.3,
        )
        twin.set_ylabel("failed requests per window")
    ax.set_xlabel("time since the soak started (s)")
    ax.set_ylabel(f"latency per {soak.window_s:g} s window (ms)")
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    return _save(fig, path)


def write_plots(report: BenchReport, path: Path) -> list[Path]:
    """The latency-throughput plot at ``path`` (when the report has load steps) and one
    latency-over-time plot per soak beside it (``<stem>-soak[-<n>].png``); the files written."""
    path = Path(path)
    written: list[Path] = []
    if report.variants:
        written.append(
            plot_latency_throughput(report.variants, path, title=f"Latency vs throughput: {report.title}")
        )
    for number, (name, soak) in enumerate(report.soaks.items()):
        suffix = "-soak" if number == 0 else f"-soak-{number + 1}"
        target = path if not report.variants and number == 0 else path.with_name(f"{path.stem}{suffix}.png")
        written.append(plot_timeline(soak, target, title=f"Latency over time: {name}"))
    return written


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
