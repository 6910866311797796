"""perf_analyzer (Triton's load generator, a tool nobody here wrote) against a KServe v2 server.

Used to cross-check ``kiln bench``'s own numbers: :func:`perf_analyzer_command` builds the command
(closed loop over a concurrency range, the payloads of a :class:`~kiln.bench.inputs.RequestPool`
written as its ``--input-data`` JSON), :func:`run_perf_analyzer` runs it and
:func:`parse_perf_csv` reads its ``-f`` CSV (latencies in microseconds) into :class:`PerfRow`.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kiln.bench.inputs import RequestPool
from kiln.errors import ConfigError, describe


@dataclass(frozen=True)
class PerfRow:
    """One concurrency step as perf_analyzer measured it (client-side latency)."""

    concurrency: int
    throughput_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float

    def to_json(self) -> dict[str, object]:
        return {"concurrency": self.concurrency, "throughput_per_s": self.throughput_per_s,
                "p50_ms": self.p50_ms, "p90_ms": self.p90_ms, "p99_ms": self.p99_ms}  # fmt: skip


def find_perf_analyzer() -> Path:
    """``perf_analyzer`` beside this Python (``make install`` puts it there), else on ``PATH``."""
    here = Path(sys.executable).parent / "perf_analyzer"
    if here.is_file():
        return here
    found = shutil.which("perf_analyzer")
    if found is None:
        raise ConfigError(
            describe("perf_analyzer is not installed", fix="run `make tools` (or `make install`)")
        )
    return Path(found)


def write_input_data(pool: RequestPool, path: Path) -> Path:
    """The pool's payloads as perf_analyzer ``--input-data`` JSON (one row each, batch axis dropped)."""
    data = []
    for payload in pool.payloads:
        entry = {}
        for name, array in payload.items():
            if array.shape[0] != 1:
                raise ConfigError(
                    describe("perf_analyzer payloads must have one row", seen=list(array.shape))
                )
            entry[name] = {"content": array[0].ravel().tolist(), "shape": list(array.shape[1:])}
        data.append(entry)
    path.write_text(json.dumps({"data": data}))
    return path


def perf_analyzer_command(
    binary: Path,
    address: str,
    model: str,
    *,
    concurrency: tuple[int, int, int],
    input_data: Path,
    csv_path: Path,
    measurement_ms: int = 2000,
) -> list[str]:
    """A closed-loop run over HTTP (binary tensors) at concurrency ``(start, end, step)``;
    ``address`` is ``HOST:PORT``."""
    start, end, step = concurrency
    if not 1 <= start <= end or step < 1:
        raise ConfigError(
            describe(
                "bad perf_analyzer concurrency range",
                seen=concurrency,
                fix="(start, end, step), e.g. (1, 16, 5)",
            )
        )
    return [str(binary), "-m", model, "-u", address, "-i", "http", "-b", "1",
            "--input-data", str(input_data), "--concurrency-range", f"{start}:{end}:{step}",
            "--percentile=99", "--measurement-interval", str(measurement_ms),
            "--stability-percentage", "10000", "--max-trials", "6", "-f", str(csv_path)]  # fmt: skip


def parse_perf_csv(text: str) -> tuple[PerfRow, ...]:
    """perf_analyzer's ``-f`` CSV: one row per concurrency, latencies in microseconds."""
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        try:
            rows.append(
                PerfRow(
                    concurrency=int(float(row["Concurrency"])),
                    throughput_per_s=float(row["Inferences/Second"]),
                    p50_ms=float(row["p50 latency"]) / 1e3,
                    p90_ms=float(row["p90 latency"]) / 1e3,
                    p99_ms=float(row["p99 latency"]) / 1e3,
                )
            )
        except (KeyError, ValueError) as exc:
            raise ConfigError(
                describe("perf_analyzer's CSV lacks a column or a number", seen=f"{exc!r} in {dict(row)}")
            ) from None
    return tuple(sorted(rows, key=lambda r: r.concurrency))


def run_perf_analyzer(
    command: Sequence[str], csv_path: Path, *, timeout_s: float = 300.0
) -> tuple[PerfRow, ...]:
    """Run ``command``; its rows. ``ConfigError`` with the end of its output when it fails."""
    done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0 or not csv_path.is_file():
        raise ConfigError(
            describe(
                f"perf_analyzer failed (exit {done.returncode})",
                seen=(done.stdout + done.stderr).strip()[-800:],
                fix="check the server address and model name",
            )
        )
    return parse_perf_csv(csv_path.read_text())
