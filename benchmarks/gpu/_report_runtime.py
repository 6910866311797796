"""Markdown for the records of the ``runtime`` stages (``_stage_runtime``): the batching ratios,
the swap soaks and the fault run, and their targets (no heavy imports: the orchestrator renders)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

SWAP_TARGET = 1.25
FAULT_TARGET_MS = 10.0
BATCHING_TARGET = 3.0
KINDS = ("runtime-plan", "runtime-step", "runtime-ratio", "runtime-swaps", "runtime-fault", "runtime-skipped")


def tables(records: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown for the runtime records (``table.md``): ratios, the swap soaks and the fault run."""
    lines: list[str] = []
    ratios = [r for r in records if r["kind"] == "runtime-ratio"]
    if ratios:
        lines += [
            "### Dynamic batching vs one request per run (kiln.runtime, torch engine)",
            "",
            "| model | instances | repeat | p99 bound ms | batching req/s (p99 ms) "
            "| one per run req/s (p99 ms) | ratio |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in ratios:
            b = (
                "–"
                if r["batched_per_s"] is None
                else f"{r['batched_per_s']:,.0f} ({r['batched_p99_ms']:.2f})"
            )
            s = "–" if r["single_per_s"] is None else f"{r['single_per_s']:,.0f} ({r['single_p99_ms']:.2f})"
            ratio = "–" if r["ratio"] is None else f"{r['ratio']:.2f}x"
            lines.append(
                f"| {r['model']} | {r['instances']} | {r['repeat']} | {r['bound_ms']:g} | {b} | {s} "
                f"| {ratio} |"
            )
        lines.append("")
    swaps = [r for r in records if r["kind"] == "runtime-swaps"]
    if swaps:
        lines += [
            "### Hot swaps under load",
            "",
            "| model | warm-up | rate/s | swaps | requests | failed | steady p50 / p99 ms "
            "| swap-window p50 / p99 / max ms | p99 ratio |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in swaps:
            window = "–"
            if "swap_p99_ms" in r:
                window = f"{r['swap_p50_ms']:.2f} / {r['swap_p99_ms']:.2f} / {r['swap_max_ms']:.1f}"
            steady = f"{r['steady_p50_ms']:.2f} / {r['steady_p99_ms']:.2f}" if "steady_p99_ms" in r else "–"
            ratio = f"{r['ratio']:.2f}x" if "ratio" in r else "–"
            lines.append(
                f"| {r['model']} | {r['variant']} | {r['rate']:g} | {r['swaps']} "
                f"| {r['ok'] + r['failed']:,} | {r['failed']} | {steady} | {window} | {ratio} |"
            )
        lines.append("")
    for r in (r for r in records if r["kind"] == "runtime-fault"):
        lines += [
            "### One transient fault every 0.5 s",
            "",
            f"{r['model']}: {r['rate']:g} requests/s, {r['faults']} faults, {r['retried']} retried requests, "
            f"{r['failed']} failed; overhead p50 clean {r['clean_overhead_p50_ms']:.2f} ms, retried "
            f"{r['retried_overhead_p50_ms']:.2f} ms (max {r['retried_overhead_max_ms']:.2f}); added p50 "
            f"{r['added_p50_ms']:.2f} ms, max {r['added_max_ms']:.2f} ms.",
            "",
        ]
    return lines


def targets(records: Sequence[dict[str, Any]]) -> list[str]:
    """The runtime targets judged from the records (only what was measured)."""
    lines = []
    for r in (r for r in records if r["kind"] == "runtime-ratio" and r["ratio"] is not None):
        verdict = "met" if r["met"] else "MISSED"
        lines.append(
            f"- {r['model']} batching >= 3x one per run at p99 <= {r['bound_ms']:g} ms, {r['instances']} "
            f"instance(s), repeat {r['repeat']}: {r['ratio']:.2f}x ({verdict})"
        )
    for r in (r for r in records if r["kind"] == "runtime-swaps" and "ratio" in r):
        verdict = "met" if r["met"] else "MISSED"
        lines.append(
            f"- {r['model']} swap-window p99 <= 1.25x steady ({r['variant']}): {r['ratio']:.2f}x, "
            f"{r['failed']} failed of {r['ok'] + r['failed']:,} ({verdict})"
        )
    for r in (r for r in records if r["kind"] == "runtime-fault"):
        verdict = "met" if r["met"] else "MISSED"
        lines.append(
            f"- {r['model']} one transient fault adds <= 10 ms: +{r['added_max_ms']:.2f} ms max ({verdict})"
        )
    return lines
