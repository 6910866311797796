"""What a run of the online loop shows: :func:`summarize` turns a
:class:`~kiln.online.run.LoopResult` into a :class:`LoopReport` (pure), which prints as Markdown
(:func:`render_markdown`), as terminal tables (:func:`render_terminal`) and as a figure
(:func:`plot_report`, matplotlib imported there only).

* **Windows** of ``window_s`` (10 s): requests, failures, p50/p99 latency, the versions that began
  serving in the window (swap markers), AUC of the answers against the clicks, and of a frozen copy
  of version 1 on the same requests.
* **Swap windows**: requests sent while a version was being checked, built and loaded, or within
  ``settle_s`` after it began serving; their p99 against the p99 of all other requests.
* **Versions**: per version, its outcome, the cache's build path and seconds, publish → serving,
  freshness (oldest newly learned event received → serving) and the gate's AUCs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.train.auc import roc_auc

if TYPE_CHECKING:
    from rich.console import Console

    from kiln.online.run import LoopResult

WINDOW_S = 10.0
SWAP_SETTLE_S = 1.0


@dataclass(frozen=True, slots=True)
class Window:
    """One window of the run (``start_s``: seconds since the traffic started)."""

    start_s: float
    requests: int
    failed: int
    p50_ms: float
    p99_ms: float
    swaps: tuple[str, ...]
    live_auc: float
    frozen_auc: float
    drift: float


@dataclass(frozen=True, slots=True)
class VersionRow:
    version: str
    outcome: str
    build_path: str
    build_seconds: float
    ready_seconds: float
    publish_to_serving_seconds: float
    freshness_seconds: float
    serving_at_s: float
    candidate_auc: float
    reference_auc: float
    reason: str


@dataclass(frozen=True)
class LoopReport:
    """The numbers of one run (NaN: not measured). Swaps count versions that replaced another."""

    duration_s: float
    rate_per_s: float
    requests: int
    failed: int
    feedback_events: int
    feedback_errors: int
    swaps: int
    rejected: int
    not_ready_answers: int
    p50_ms: float
    p99_ms: float
    swap_p99_ms: float
    steady_p99_ms: float
    publish_to_serving_p50_s: float
    publish_to_serving_max_s: float
    freshness_p50_s: float
    freshness_max_s: float
    live_auc_after_drift: float
    frozen_auc_after_drift: float
    build_paths: dict[str, int]
    windows: tuple[Window, ...]
    versions: tuple[VersionRow, ...]

    @property
    def swap_p99_ratio(self) -> float:
        return self.swap_p99_ms / self.steady_p99_ms if self.steady_p99_ms > 0 else float("nan")

    @property
    def auc_margin(self) -> float:
        return self.live_auc_after_drift - self.frozen_auc_after_drift

    def to_json(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("windows", "versions")}
        data["swap_p99_ratio"] = self.swap_p99_ratio
        data["windows"] = [_row(w) for w in self.windows]
        data["versions"] = [_row(v) for v in self.versions]
        cleaned: dict[str, Any] = _clean(data)
        return cleaned


def summarize(result: LoopResult, *, window_s: float = WINDOW_S) -> LoopReport:
    """The report of ``result`` (see the module docstring)."""
    answers = result.answers
    start = result.started_s
    sent = np.array([a.sent_s - start for a in answers])
    latency_ms = np.array([a.latency_s * 1000.0 for a in answers])
    ok = np.array([not a.error for a in answers], dtype=bool)
    labels = np.array([a.label for a in answers])
    live = np.array([a.score for a in answers])
    frozen = np.asarray(result.frozen_scores, dtype=np.float64)
    versions = _versions(result.journal)
    serving = [v for v in versions if v.outcome == "serving"]
    swapped = [v for v in serving if v.serving_at_s > start]
    in_swap = np.zeros(len(answers), dtype=bool)
    for version in swapped:
        began = version.serving_at_s - start - version.ready_seconds
        in_swap |= (sent >= began) & (sent <= version.serving_at_s - start + SWAP_SETTLE_S)
    windows = []
    duration = result.config.duration_s
    for begin in np.arange(0.0, duration, window_s):
        mask = (sent >= begin) & (sent < begin + window_s)
        good = mask & ok
        swaps = tuple(v.version for v in swapped if begin <= v.serving_at_s - start < begin + window_s)
        windows.append(
            Window(
                float(begin),
                int(mask.sum()),
                int((mask & ~ok).sum()),
                _pct(latency_ms[good], 50),
                _pct(latency_ms[good], 99),
                swaps,
                _auc(labels[good], live[good]),
                _auc(labels[good], frozen[good]) if len(frozen) == len(answers) else float("nan"),
                result.config.drift(float(begin + window_s / 2)),
            )
        )
    drifted = ok & (sent >= result.config.drift_to * duration)
    ready = {v.version for v in serving}
    publish = [v.publish_to_serving_seconds for v in swapped]
    fresh = [v.freshness_seconds for v in swapped]
    paths: dict[str, int] = {}
    for version in swapped:
        paths[version.build_path] = paths.get(version.build_path, 0) + 1
    return LoopReport(
        duration_s=duration,
        rate_per_s=result.config.rate_per_s,
        requests=len(answers),
        failed=int((~ok).sum()),
        feedback_events=result.acked_events,
        feedback_errors=len(result.feedback_errors),
        swaps=len(swapped),
        rejected=sum(v.outcome == "rejected" for v in versions),
        not_ready_answers=sum(1 for a in answers if not a.error and a.version not in ready),
        p50_ms=_pct(latency_ms[ok], 50),
        p99_ms=_pct(latency_ms[ok], 99),
        swap_p99_ms=_pct(latency_ms[ok & in_swap], 99),
        steady_p99_ms=_pct(latency_ms[ok & ~in_swap], 99),
        publish_to_serving_p50_s=_pct(np.array(publish), 50),
        publish_to_serving_max_s=max(publish, default=float("nan")),
        freshness_p50_s=_pct(np.array(fresh), 50),
        freshness_max_s=max(fresh, default=float("nan")),
        live_auc_after_drift=_auc(labels[drifted], live[drifted]),
        frozen_auc_after_drift=_auc(labels[drifted], frozen[drifted])
        if len(frozen) == len(answers)
        else math.nan,
        build_paths=paths,
        windows=tuple(windows),
        versions=tuple(versions),
    )


def render_markdown(report: LoopReport, *, figure: str | None = None) -> str:
    """The report as a Markdown page (``figure``: the PNG's file name, linked when given)."""
    r = report
    lines = [
        "# kiln demo online",
        "",
        f"{r.duration_s:g} s of traffic at {r.rate_per_s:g} requests/s; every answer's click fed back.",
        "",
        "| | |",
        "|---|---|",
        f"| versions swapped in under load | {r.swaps} |",
        f"| versions rejected by the gate | {r.rejected} |",
        f"| requests served | {r.requests - r.failed} |",
        f"| failed requests | {r.failed} |",
        f"| answers from a version that never went READY | {r.not_ready_answers} |",
        f"| feedback events acknowledged | {r.feedback_events} ({r.feedback_errors} failed batches) |",
        f"| latency p50 / p99 | {_ms(r.p50_ms)} / {_ms(r.p99_ms)} |",
        f"| p99 in swap windows / steady | {_ms(r.swap_p99_ms)} / {_ms(r.steady_p99_ms)} "
        f"(×{_num(r.swap_p99_ratio, 2)}) |",
        f"| publish → serving p50 / max | {_s(r.publish_to_serving_p50_s)} / "
        f"{_s(r.publish_to_serving_max_s)} |",
        f"| freshness p50 / max | {_s(r.freshness_p50_s)} / {_s(r.freshness_max_s)} |",
        f"| AUC after the drift, live / frozen version 1 | {_num(r.live_auc_after_drift)} / "
        f"{_num(r.frozen_auc_after_drift)} (margin {_num(r.auc_margin)}) |",
        f"| build paths | {', '.join(f'{k} {v}' for k, v in sorted(r.build_paths.items())) or '-'} |",
        "",
    ]
    if figure:
        lines += [f"![latency, AUC and build paths]({figure})", ""]
    lines += [
        f"## Per {WINDOW_S:g} s window",
        "",
        "| from s | requests | failed | p50 | p99 | swaps | drift | AUC live | AUC frozen |",
        "|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for w in r.windows:
        lines.append(
            f"| {w.start_s:g} | {w.requests} | {w.failed} | {_ms(w.p50_ms)} | {_ms(w.p99_ms)} | "
            f"{' '.join(w.swaps) or '-'} | {w.drift:.2f} | {_num(w.live_auc)} | {_num(w.frozen_auc)} |"
        )
    lines += [
        "",
        "## Versions",
        "",
        "| version | outcome | build path | build s | check→serving s | publish→serving s | freshness s | "
        "gate AUC (reference) |",
        "|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for v in r.versions:
        lines.append(
            f"| {v.version} | {v.outcome} | {v.build_path or '-'} | {_num(v.build_seconds, 3)} | "
            f"{_num(v.ready_seconds, 3)} | {_num(v.publish_to_serving_seconds, 2)} | "
            f"{_num(v.freshness_seconds, 2)} | {_num(v.candidate_auc)} ({_num(v.reference_auc)}) |"
        )
    return "\n".join(lines) + "\n"


def render_terminal(report: LoopReport, console: Console) -> None:
    """The headline numbers and the per-window table, as rich tables."""
    from rich.table import Table  # noqa: PLC0415

    r = report
    head = Table(title="kiln demo online", title_justify="left", show_header=False)
    head.add_column()
    head.add_column()
    for name, value in (
        ("versions swapped in under load", str(r.swaps)),
        ("rejected by the gate", str(r.rejected)),
        ("requests served / failed", f"{r.requests - r.failed} / {r.failed}"),
        ("latency p50 / p99", f"{_ms(r.p50_ms)} / {_ms(r.p99_ms)}"),
        (
            "p99 swap windows / steady",
            f"{_ms(r.swap_p99_ms)} / {_ms(r.steady_p99_ms)} (×{_num(r.swap_p99_ratio, 2)})",
        ),
        (
            "publish → serving p50 / max",
            f"{_s(r.publish_to_serving_p50_s)} / {_s(r.publish_to_serving_max_s)}",
        ),
        ("freshness p50 / max", f"{_s(r.freshness_p50_s)} / {_s(r.freshness_max_s)}"),
        (
            "AUC after drift: live / frozen v1",
            f"{_num(r.live_auc_after_drift)} / {_num(r.frozen_auc_after_drift)}",
        ),
        ("build paths", ", ".join(f"{k} {v}" for k, v in sorted(r.build_paths.items())) or "-"),
    ):
        head.add_row(name, value)
    console.print(head)
    table = Table(title=f"per {WINDOW_S:g} s window", title_justify="left")
    for column in ("from s", "requests", "failed", "p50", "p99", "swaps", "drift", "AUC live", "AUC frozen"):
        table.add_column(column, justify="right")
    for w in r.windows:
        table.add_row(
            f"{w.start_s:g}", str(w.requests), str(w.failed), _ms(w.p50_ms), _ms(w.p99_ms),
            " ".join(w.swaps) or "-", f"{w.drift:.2f}", _num(w.live_auc), _num(w.frozen_auc),
        )  # fmt: skip
    console.print(table)


def plot_report(report: LoopReport, path: Path, *, started_s: float) -> Path:
    """Three panels: p50/p99 per window with swap markers; AUC live vs frozen; build seconds per
    version by build path. Needs matplotlib (``kiln[dev]``)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    r = report
    fig, (lat, auc, build) = plt.subplots(3, 1, figsize=(10, 10), constrained_layout=True)
    mids = [w.start_s + WINDOW_S / 2 for w in r.windows]
    lat.plot(mids, [w.p50_ms for w in r.windows], marker="o", label="p50")
    lat.plot(mids, [w.p99_ms for w in r.windows], marker="o", label="p99")
    for v in r.versions:
        if v.outcome == "serving" and not math.isnan(v.serving_at_s):
            lat.axvline(v.serving_at_s - started_s, color="grey", alpha=0.25, linewidth=0.8)
    lat.set(xlabel="seconds", ylabel="latency (ms)", title=f"latency per {WINDOW_S:g} s window (grey: swaps)")
    lat.legend()
    auc.plot(mids, [w.live_auc for w in r.windows], marker="o", label="live (the loop)")
    auc.plot(mids, [w.frozen_auc for w in r.windows], marker="o", label="frozen version 1")
    auc.plot(mids, [w.drift for w in r.windows], linestyle=":", color="grey", label="drift (0..1)")
    auc.set(xlabel="seconds", ylabel="AUC", title="AUC of the answers against the clicks")
    auc.legend()
    served = [v for v in r.versions if v.outcome == "serving"]
    paths = sorted({v.build_path for v in served})
    for p in paths:
        chosen = [v for v in served if v.build_path == p]
        build.bar([int(v.version) for v in chosen], [v.build_seconds for v in chosen], label=p)
    build.set(xlabel="version", ylabel="build seconds", title="engine build per version, by cache path")
    if paths:
        build.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _versions(journal: Sequence[dict[str, Any]]) -> list[VersionRow]:
    rows = []
    for line in journal:
        gate = line.get("gate") or {}
        serving_at = line.get("serving_at_s")
        rows.append(
            VersionRow(
                version=str(line["version"]),
                outcome=str(line["outcome"]),
                build_path=str(line.get("build_path") or ""),
                build_seconds=_f(line.get("build_seconds")),
                ready_seconds=_f(line.get("ready_seconds")),
                publish_to_serving_seconds=_f(line.get("publish_to_serving_seconds")),
                freshness_seconds=_f(line.get("freshness_seconds")),
                serving_at_s=_f(serving_at) if serving_at is not None else math.nan,
                candidate_auc=_f(gate.get("candidate_auc")),
                reference_auc=max(_f(gate.get("serving_auc")), _f(gate.get("first_auc"))),
                reason=str(gate.get("reason") or line.get("reason") or ""),
            )
        )
    return rows


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    if len(labels) < 50 or not np.isfinite(scores).all():
        return math.nan
    return roc_auc(labels, scores)


def _f(value: object) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f} ms"


def _s(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f} s"


def _num(value: float, digits: int = 4) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _row(item: object) -> dict[str, Any]:
    return {k: getattr(item, k) for k in item.__slots__}  # type: ignore[attr-defined]


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
