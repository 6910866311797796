"""Markdown tables for the foundation benchmark's results (``foundation.py`` writes the JSON)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TARGETS = {
    "cnn": ("b32 throughput of int8 vs unoptimized fp32", 4.5),
    "ranker": ("b32 throughput of int8 vs unoptimized fp32", 2.2),
}
ACCURACY_BARS = {"cnn": ("top-1 agreement", ">=", 0.9), "ctr": ("AUC drop", "<=", 0.003)}
HIT_RATIO, UPDATE_RATIO = 0.05, 0.15


def accuracy_cell(name: str, report: Mapping[str, Any] | None) -> str:
    if not report:
        return "-"
    if name == "cnn":
        return f"top-1 {report['top1_agreement']:.3f}"
    if name == "ctr":
        return f"AUC drop {report['drop']:.4f}"
    if name == "ranker":
        return f"Spearman {report['spearman']:.4f}"
    return f"rel L2 {report['rel_l2_error']:.3g}"


def speed_table(results: Mapping[str, Any]) -> list[str]:
    lines = [
        "| model | variant | threads | b1 p50 ms | b1 p99 ms | b32 p50 ms | b32 samples/s "
        "| b32 × unopt. | b1 × unopt. | accuracy vs fp32 | CPU s / wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model in results["models"]:
        name = model["name"]
        for variant, speed in model.get("speed", {}).items():
            ratio = model["ratios"][variant]
            accuracy = (
                accuracy_cell(name, model["accuracy"].get(variant))
                if variant in model["accuracy"]
                else "reference"
            )
            cells = [
                name,
                variant,
                model["threads"][variant],
                f"{speed['b1_p50_ms']:.3f}",
                f"{speed['b1_p99_ms']:.3f}",
                f"{speed['b32_p50_ms']:.2f}",
                f"{speed['b32_samples_per_s']:,.0f}",
                f"{ratio['b32_throughput_vs_unoptimized']:.2f}",
                f"{ratio['b1_p50_speedup_vs_unoptimized']:.2f}",
                accuracy,
                f"{speed['cpu_per_wall']:.2f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def build_table(results: Mapping[str, Any]) -> list[str]:
    lines = [
        "| model | full int8 build s | cache hit s (× full) | hit + engine load s (× full) "
        "| fine-tune update s (× full) | path | seed-1 update s (× full) | path | fp32 build s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model in results["models"]:
        b = model["builds"]
        m = b["median_s"]
        cells = [
            model["name"],
            f"{m['full']:.2f}",
            f"{m['hit']:.3f} ({b['hit_ratio']:.3f})",
            f"{m['hit_and_load']:.3f} ({b['hit_and_load_ratio']:.3f})",
            f"{m['tune']:.2f} ({b['tune_ratio']:.2f})",
            b["paths"]["tune"],
            f"{m['update']:.2f} ({b['update_ratio']:.2f})",
            b["paths"]["update"],
            "-" if b["fp32_build_s"] is None else f"{b['fp32_build_s']:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def phase_table(results: Mapping[str, Any]) -> list[str]:
    lines = [
        "| model | step | wall s | outside the lock s | backend build s | accuracy check + commit s |",
        "|---|---|---|---|---|---|",
    ]
    for model in results["models"]:
        b = model["builds"]
        for step, label in (
            ("full", "full int8 build"),
            ("hit", "cache hit"),
            ("tune", "weight-only update, fine-tuned"),
            ("update", "weight-only update, seed-1 weights"),
        ):
            p = b["phases_median_s"][step]
            cells = [model["name"], label, f"{b['median_s'][step]:.2f}"]
            cells += [f"{p['outside_lock']:.2f}", f"{p['backend']:.2f}", f"{p['check_and_commit']:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def target_lines(results: Mapping[str, Any]) -> list[str]:
    lines = []
    for model in results["models"]:
        name = model["name"]
        if name in TARGETS and "speed" in model:
            what, want = TARGETS[name]
            got = model["ratios"]["kiln int8"]["b32_throughput_vs_unoptimized"]
            lines.append(
                f"- {name}: {what} {got:.2f}× (target ≥ {want}×): {'met' if got >= want else 'NOT met'}"
            )
        if name in ACCURACY_BARS and "accuracy" in model:
            label, op, bar = ACCURACY_BARS[name]
            report = model["accuracy"]["kiln int8"]
            got = report["top1_agreement"] if name == "cnn" else report["drop"]
            ok = got >= bar if op == ">=" else got <= bar
            lines.append(
                f"- {name}: int8 {label} {got:.4f} (target {op} {bar}): {'met' if ok else 'NOT met'}"
            )
        b = model["builds"]
        for key, label, bar in (
            ("hit_ratio", "cache hit", HIT_RATIO),
            ("tune_ratio", "weight-only update (fine-tuned)", UPDATE_RATIO),
            ("update_ratio", "weight-only update (seed-1 weights)", UPDATE_RATIO),
        ):
            verdict = "met" if b[key] <= bar else "NOT met"
            lines.append(f"- {name}: {label} {b[key]:.3f} of the full int8 build (target ≤ {bar}): {verdict}")
    return lines


def _loads(loads: Any) -> str:
    """``(name, {"before": (1, 5, 15 min), "after": ...})`` pairs as one line."""

    def three(values: Any) -> str:
        return "/".join(f"{x:.2f}" for x in values)

    return "; ".join(f"{name} {three(load['before'])} → {three(load['after'])}" for name, load in loads)


def render_markdown(results: Mapping[str, Any]) -> str:
    machine = results["machine"]
    head = [
        f"Machine: {machine['cpu']} ({machine['isa']}), {machine['cpus']} CPUs; "
        f"onnxruntime {machine['onnxruntime']}, onnx {machine['onnx']}, Python {machine['python']}; "
        f"{machine['date']}.",
        "",
        "Load average (1/5/15 min) before and after each model's build rounds: "
        + _loads((m["name"], m["builds"]["load_average"]) for m in results["models"]),
        "",
    ]
    speed = [m for m in results["models"] if "speed" in m]
    if speed:
        evaluation = ", ".join(f"{m['name']} {m['evaluation_samples']}" for m in speed)
        head += [
            "Load average (1/5/15 min) before and after each model's speed runs: "
            + _loads((m["name"], m["load_average"]) for m in speed),
            "",
            f"Serving speed, and accuracy against the unoptimized fp32 model on {evaluation} samples:",
            "",
            *speed_table(results),
            "",
        ]
    return "\n".join(
        [
            *head,
            "Build time through the engine cache (medians of the build rounds):",
            "",
            *build_table(results),
            "",
            "Where the build time goes (medians; the backend build is the precision pass and ONNX Runtime's "
            "optimization, the check runs the fp32 reference and the new engine on the validation samples):",
            "",
            *phase_table(results),
            "",
            "Targets:",
            "",
            *target_lines(results),
            "",
        ]
    )
