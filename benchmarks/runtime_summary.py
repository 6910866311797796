"""The Markdown summary of ``benchmarks/runtime.py``: each measurement against the runtime's targets."""

from __future__ import annotations

from runtime_parts import FaultResult, Outcome, within

from kiln.bench import SoakResult, StepResult

SWAP_TARGET = 1.25
FAULT_TARGET_MS = 10.0
BATCHING_TARGET = 3.0


def best_rate(steps: list[StepResult], bound_ms: float) -> StepResult | None:
    """The highest-rate step whose p99 stays under the bound with no failure."""
    good = [s for s in steps if within(s, bound_ms)]
    return max(good, key=lambda s: s.rate_per_s or 0.0, default=None)


SWAP_HEADER = (
    "| model | rate/s | swaps (every s) | steady p50 / p99 ms | swap-window p50 / p99 ms | p99 ratio "
    "| failed | target |"
)
FAULT_HEADER = (
    "| model | rate/s | faults | retried requests | latency p50 clean / retried ms | overhead p50 clean ms "
    "| overhead retried p50 / max ms | added p50 / max ms | failed | target |"
)


def _fault_met(f: FaultResult) -> bool:
    return f.retried.count > 0 and f.added_max_ms <= FAULT_TARGET_MS and f.failed == 0


def _yes(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def summarize(outcomes: list[Outcome], machine: str, started: str, command: str) -> str:
    lines = [f"Command: `{command}`  ", f"Machine: {machine}  ", f"Started: {started}", ""]
    lines += ["### Hot swap under load", "", SWAP_HEADER, "|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        for variant, soak in o.swaps.items():
            lines.append(_swap_row(o.model, variant, soak, o.swap_every_s))
    lines += ["", "### One injected transient fault", "", FAULT_HEADER, "|---" * 10 + "|"]
    for o in outcomes:
        f = o.fault
        if f is None:
            continue
        lines.append(
            f"| {o.model} | {f.rate:g} | {f.faults} | {f.retried.count} | {f.clean.percentile_ms(50):.2f} / "
            f"{f.retried.percentile_ms(50):.2f} | {f.clean_overhead.percentile_ms(50):.2f} | "
            f"{f.retried_overhead.percentile_ms(50):.2f} / {f.retried_overhead.max_ns / 1e6:.2f} | "
            f"{f.added_p50_ms:.2f} / {f.added_max_ms:.2f} | {f.failed} | {_yes(_fault_met(f))} |"
        )
    lines += ["", "### Dynamic batching vs one request per run (highest rate with p99 under the bound)", ""]
    lines += [
        "| model | p99 bound ms | mode | best rate/s | achieved req/s | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        for mode, steps in o.sweeps.items():
            best = best_rate(steps, o.bound_ms)
            cells = ("-", "-", "-")
            if best is not None:
                cells = (f"{best.rate_per_s:g}", f"{best.throughput_per_s:.1f}", f"{best.summary.p99_ms:.2f}")
            lines.append(f"| {o.model} | {o.bound_ms:g} | {mode} | {' | '.join(cells)} |")
    lines += ["", *_ratios(outcomes)]
    return "\n".join(lines) + "\n"


def _swap_row(model: str, variant: str, soak: SoakResult, every_s: float) -> str:
    steady, swap = soak.phases.get("steady"), soak.phases.get("swap")
    swaps = sum(1 for m in soak.markers if m.kind == "released")
    if steady is None or swap is None:
        rate, failed = soak.step.rate_per_s, soak.step.failed
        return f"| {model} ({variant}) | {rate:g} | {swaps} ({every_s:g}) | - | - | - | {failed} | - |"
    ratio = swap.summary.p99_ms / steady.summary.p99_ms if steady.summary.p99_ms else float("inf")
    failed = soak.step.failed
    return (
        f"| {model} ({variant}) | {soak.step.rate_per_s:g} | {swaps} ({every_s:g}) | "
        f"{steady.summary.p50_ms:.2f} / {steady.summary.p99_ms:.2f} | "
        f"{swap.summary.p50_ms:.2f} / {swap.summary.p99_ms:.2f} | "
        f"{ratio:.2f} | {failed} | {_yes(ratio <= SWAP_TARGET and failed == 0)} |"
    )


def _ratios(outcomes: list[Outcome]) -> list[str]:
    lines = []
    for o in outcomes:
        rates = {mode: best_rate(steps, o.bound_ms) for mode, steps in o.sweeps.items()}
        batched = next((s for m, s in rates.items() if m.startswith("batching")), None)
        for mode, single in rates.items():
            if mode.startswith("batching") or batched is None or single is None:
                continue
            ratio = batched.throughput_per_s / single.throughput_per_s
            met = _yes(ratio >= BATCHING_TARGET) if o.model == "cnn" else "(no target)"
            lines.append(f"- {o.model}: batching / {mode} = {ratio:.2f}x {met}")
    return lines
