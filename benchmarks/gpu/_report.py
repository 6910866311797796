"""Rendering ``results.jsonl`` as the markdown tables of ``table.md`` (and BENCHMARKS.md)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import _report_runtime

MODELS = ("resnet50", "resnet50-fused", "resnet50-1x1mm", "bert-large", "bert-base", "ctr")


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.{digits}g}" if abs(value) < 100 else f"{value:.1f}"
        return f"{value:.{digits}g}"
    return "–" if value is None else str(value)


def _rate(record: dict[str, Any]) -> str:
    return _fmt(float(record["items_per_s"]))


def _timing_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| variant | measured | batch | median ms | p99 ms | items/s |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r.get('scope', '')} | {r['batch']} | {_fmt(r['median_ms'])} | "
            f"{_fmt(r['p99_ms'])} | {_fmt(float(r['items_per_s']))} |"
        )
    return lines


def _accuracy_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| compared | rel. L2 error | max abs error | top-1 agreement / AUC drop |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        extra = r.get("top1_agreement", r.get("drop"))
        lines.append(
            f"| {r['variant']} | {_fmt(r.get('rel_l2', r.get('rel_l2_error')))} | "
            f"{_fmt(r.get('max_abs', r.get('max_abs_error')))} | {_fmt(extra)} |"
        )
    return lines


def _events(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| step | seconds | details |", "|---|---:|---|"]
    for r in rows:
        kind = r["kind"]
        what = r.get("what") or r.get("path") or kind
        details = {
            k: v
            for k, v in r.items()
            if k not in ("stage", "kind", "time", "model", "what", "seconds", "path")
        }
        text = ", ".join(f"{k}={v}" for k, v in details.items())
        lines.append(f"| {kind}: {what} | {_fmt(r.get('seconds'))} | {text[:300]} |")
    return lines


def targets(records: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, judged from the records (only what was measured)."""
    timing = [r for r in records if r["kind"] == "timing"]
    lines = []

    def best(model: str, variant: str, scope: str, max_p99: float | None = None) -> dict[str, Any] | None:
        rows = [
            r
            for r in timing
            if str(r["model"]).startswith(model)
            and r["variant"] == variant
            and r.get("scope", "").startswith(scope)
        ]
        if max_p99 is not None:
            rows = [r for r in rows if r["p99_ms"] <= max_p99]
        return max(rows, key=lambda r: r["items_per_s"], default=None)

    engine = best("resnet50", "kiln torch engine", "in-engine")
    if engine:
        verdict = "met" if engine["items_per_s"] >= 35000 else "MISSED"
        lines.append(
            f"- ResNet-50 in-engine >= 35,000 img/s: {_rate(engine)} img/s at batch {engine['batch']} "
            f"({engine['model']}) ({verdict})"
        )
    eager = best("resnet50", "eager fp32", "eager")
    for scope in ("in-engine", "host round trip"):
        kiln = best("resnet50", "kiln torch engine", scope, max_p99=15.0)
        if eager and kiln:
            ratio = kiln["items_per_s"] / eager["items_per_s"]
            verdict = "met" if ratio >= 4 else "MISSED"
            lines.append(
                f"- ResNet-50 >= 4x eager fp32 at p99 <= 15 ms ({scope}): {ratio:.2f}x, "
                f"{_rate(kiln)} img/s at batch {kiln['batch']}, p99 {_fmt(kiln['p99_ms'])} ms, "
                f"against the best eager fp32 {_rate(eager)} img/s ({verdict})"
            )
    bert = best("bert-large", "kiln torch engine", "in-engine")
    if bert:
        verdict = "met" if bert["items_per_s"] >= 2000 else "MISSED"
        lines.append(
            f"- BERT-large seq 384 in-engine >= 2,000 seq/s: {_rate(bert)} seq/s at batch {bert['batch']} "
            f"({bert['model']}) ({verdict})"
        )
    builds = {r["model"]: r for r in records if r["kind"] == "build"}
    refits = [
        r
        for r in records
        if r["kind"] == "load" and r["model"] == "resnet50" and "refit" in str(r.get("what"))
    ]
    if refits and "resnet50" in builds:
        seconds = refits[-1]["seconds"]
        verdict = "met" if seconds <= 0.1 else "MISSED"
        lines.append(
            f"- ResNet-50 weight refit <= 100 ms: {seconds * 1000:.1f} ms to load version 2 into the standby "
            f"engine, against {builds['resnet50']['seconds']} s for the full build (cold compile) ({verdict})"
        )
    e2e = [r for r in records if r["kind"] == "e2e-timing" and r.get("p99_ms", 1e9) <= 5.0]
    if e2e:
        top = max(e2e, key=lambda r: r["items_per_s"])
        verdict = "met" if top["items_per_s"] >= 50000 else "MISSED"
        lines.append(
            f"- CTR served end to end >= 50,000 inferences/s at p99 <= 5 ms: {_rate(top)} ({verdict})"
        )
    return lines + _report_runtime.targets(records)


def render(records: list[dict[str, Any]]) -> str:
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["kind"] in _report_runtime.KINDS:
            continue  # rendered by _report_runtime.tables below
        by_model[str(record.get("model", record["stage"]))].append(record)
    lines = ["# GPU benchmark results", ""]
    env = next((r for r in records if r["kind"] == "env"), None)
    if env:
        shown = ", ".join(f"{k}={v}" for k, v in env.items() if k not in ("stage", "kind", "time"))
        lines += [f"Environment: {shown}", ""]
    lines += ["## Targets", "", *(targets(records) or ["- (nothing measured yet)"]), ""]
    for model in (*MODELS, *sorted(set(by_model) - set(MODELS))):
        rows = by_model.get(model)
        if not rows:
            continue
        lines += [f"## {model}", ""]
        timing = [r for r in rows if r["kind"] in ("timing", "e2e-timing")]
        if timing:
            lines += [*_timing_table(timing), ""]
        acc = [r for r in rows if r["kind"] == "accuracy"]
        if acc:
            lines += [*_accuracy_table(acc), ""]
        other = [r for r in rows if r["kind"] not in ("timing", "e2e-timing", "accuracy", "env")]
        if other:
            lines += [*_events(other), ""]
    runtime = _report_runtime.tables(records)
    if runtime:
        lines += ["## kiln.runtime serving the torch engine", "", *runtime]
    return "\n".join(lines)
