"""What a warm-up run buys on ONNX Runtime on CPU: the first run of a fresh engine at each batch size
against the runs after it, for the example models (the premise of ``prepares_per_shape = False``).

    python benchmarks/runtime_warmup_cost.py --models cnn,ctr --trials 3 --out bench-out

For each trial a fresh engine is loaded from the artifact (as a hot swap does), then, for each batch
size in ascending order, one first run and ``--repeats`` more are timed. If the first run at a size
costs about what the later ones cost, warming that size up buys nothing and only takes CPU during
the swap. Prints a Markdown table and writes it to ``--out/warmup-cost.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runtime_parts import prepare

from kiln.bench import describe_machine
from kiln.runtime.checks import warmup_batch

SIZES = {"ctr": (1, 64), "cnn": (1, 8)}
MAX_BATCH = {"ctr": 64, "cnn": 8}


def measure(name: str, trials: int, repeats: int, root: Path) -> list[str]:
    prepared = prepare(name, "full", root, max_batch_size=MAX_BATCH[name])
    firsts: dict[int, list[float]] = {size: [] for size in SIZES[name]}
    laters: dict[int, list[float]] = {size: [] for size in SIZES[name]}
    loads: list[float] = []
    for trial in range(trials):
        started = time.perf_counter()
        engine = prepared.factory(trial)()
        loads.append(time.perf_counter() - started)
        instance = engine.create_instance()
        for size in SIZES[name]:
            feed = warmup_batch(engine.inputs, engine.profiles, size)
            started = time.perf_counter()
            instance.run(feed)
            firsts[size].append(time.perf_counter() - started)
            for _ in range(repeats):
                started = time.perf_counter()
                instance.run(feed)
                laters[size].append(time.perf_counter() - started)
        instance.close()
        engine.close()
    rows = [f"| {name} | load (new session) | {_ms(loads)} | | |"]
    for size in SIZES[name]:
        first, later = statistics.median(firsts[size]), statistics.median(laters[size])
        rows.append(
            f"| {name} | batch {size} | {_ms(firsts[size])} | {_ms(laters[size])} | {first / later:.2f} |"
        )
    return rows


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.1f} (min {min(values) * 1e3:.1f}, max {max(values) * 1e3:.1f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="cnn,ctr")
    parser.add_argument("--trials", type=int, default=3, help="fresh engines per model")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after the first, per size")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in SIZES]
    if unknown:
        parser.error(f"--models: unknown {unknown}; use some of {', '.join(SIZES)}")
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    load_at_start = os.getloadavg()[0]
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="kiln-warmup-") as tmp:
        for name in models:
            rows += measure(name, args.trials, args.repeats, Path(tmp))
    given = argv if argv is not None else sys.argv[1:]
    command = "python benchmarks/runtime_warmup_cost.py " + " ".join(given)
    lines = [
        f"Command: `{command}`  ",
        f"Machine: {describe_machine().line()}  ",
        f"Started: {started}; 1-minute load average {load_at_start:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end",
        "",
        "| model | step | first run ms (median of trials) | later runs ms (median) | first ÷ later |",
        "|---|---|---|---|---|",
        *rows,
    ]
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "warmup-cost.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
