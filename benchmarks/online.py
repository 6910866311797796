"""The online loop under load: feedback → ``kiln train`` → the server's gate → build → hot swap.

    python benchmarks/online.py --out bench-out                   # 240 s at 150 requests/s
    python benchmarks/online.py --duration 30 --out /tmp/quick    # a smoke run

Runs :func:`kiln.online.run.run_loop` (what ``kiln demo online`` runs): a fresh repository with
version 1 of the tiny ``ctr`` example, ``kiln serve --feedback`` and ``kiln train`` (exporting
every ``--every-s`` seconds) as child processes, client threads sending requests at a steady rate
and each answer's click, from a click stream whose users' interests drift, back as feedback.

Acceptance numbers (targets from the issue):

* swaps under continuous load (≥ 50) with 0 failed requests, every answer from a version that
  went READY;
* p99 of requests sent in swap windows (a version's check, build and load, and 1 s after it began
  serving) ≤ 1.25 × the p99 of all other requests;
* publish → serving (the trainer's publication time to the version serving) ≤ 5 s;
* freshness (the store receiving the oldest event a version newly learned → that version serving);
* AUC after the drift of the live answers vs a frozen copy of version 1 on the same requests;
* the engine cache's build path per version.

Writes ``online.json``, ``online.md`` (the report with the acceptance table) and ``online.png``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
from pathlib import Path

from kiln.bench import describe_machine
from kiln.online.report import LoopReport, plot_report, render_markdown, summarize
from kiln.online.run import LoopConfig, run_loop


def acceptance(report: LoopReport) -> list[tuple[str, str, str, bool]]:
    """(what, measured, target, met) for each acceptance number."""
    r = report
    return [
        ("swaps under load", str(r.swaps), "≥ 50", r.swaps >= 50),
        ("failed requests", str(r.failed), "0", r.failed == 0),
        ("answers from a version not READY", str(r.not_ready_answers), "0", r.not_ready_answers == 0),
        (
            "p99 swap windows / steady",
            f"{r.swap_p99_ms:.2f} / {r.steady_p99_ms:.2f} ms = ×{r.swap_p99_ratio:.2f}",
            "≤ 1.25",
            r.swap_p99_ratio <= 1.25,
        ),
        (
            "publish → serving p50 / max",
            f"{r.publish_to_serving_p50_s:.2f} / {r.publish_to_serving_max_s:.2f} s",
            "≤ 5 s",
            r.publish_to_serving_max_s <= 5.0,
        ),
        ("freshness p50 / max", f"{r.freshness_p50_s:.2f} / {r.freshness_max_s:.2f} s", "(reported)", True),
        (
            "AUC after drift: live / frozen v1",
            f"{r.live_auc_after_drift:.4f} / {r.frozen_auc_after_drift:.4f} (margin {r.auc_margin:+.4f})",
            "live > frozen",
            r.auc_margin > 0,
        ),
        (
            "build paths of swapped versions",
            ", ".join(f"{k} {v}" for k, v in sorted(r.build_paths.items())),
            "weight-only: no full build",
            "build" not in r.build_paths,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=240.0, help="seconds of traffic")
    parser.add_argument("--rate", type=float, default=150.0, help="requests per second")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--every-s", type=float, default=2.0, help="the trainer's export interval")
    parser.add_argument("--size", default="tiny", choices=["tiny", "full"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    config = LoopConfig(
        duration_s=args.duration,
        rate_per_s=args.rate,
        clients=args.clients,
        every_s=args.every_s,
        size=args.size,
    )
    machine = describe_machine()
    started = datetime.datetime.now(datetime.UTC)
    result = run_loop(config, args.out, progress=lambda done, msg: print(f"[{done:4.0%}] {msg}", flush=True))
    report = summarize(result)
    ended = describe_machine()
    args.out.mkdir(parents=True, exist_ok=True)
    figure = plot_report(report, args.out / "online.png", started_s=result.started_s)
    rows = acceptance(report)
    command = (
        f"python benchmarks/online.py --duration {args.duration:g} --rate {args.rate:g} "
        f"--clients {args.clients} --every-s {args.every_s:g} --size {args.size} --out bench-out"
    )
    header = [
        f"Command: `{command}` · started {started:%Y-%m-%d %H:%M} UTC",
        f"Machine: {machine.cpu}, {machine.cores} cores, Python {machine.python}, ONNX Runtime "
        f"{machine.onnxruntime}; load average {machine.load_avg[0]} at the start, "
        f"{ended.load_avg[0]} at the end",
        "",
        "| acceptance | measured | target | met |",
        "|---|---|---|---|",
        *(
            f"| {what} | {measured} | {target} | {'yes' if met else 'no'} |"
            for what, measured, target, met in rows
        ),
        "",
    ]
    markdown = "\n".join(header) + render_markdown(report, figure=figure.name).replace(
        "# kiln demo online", "## Run"
    )
    (args.out / "online.md").write_text(markdown)
    data = {
        "command": command,
        "started": started.isoformat(),
        "machine": machine.to_json(),
        "load_avg_end": list(ended.load_avg),
        "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
        "acceptance": [{"what": w, "measured": m, "target": t, "met": ok} for w, m, t, ok in rows],
        "report": report.to_json(),
    }
    (args.out / "online.json").write_text(json.dumps(data, indent=2, default=lambda v: None))
    print(markdown)
    if not math.isfinite(report.p99_ms):
        sys.exit(1)


if __name__ == "__main__":
    main()
