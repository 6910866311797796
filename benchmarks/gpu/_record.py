"""Writing benchmark results as they happen: one JSON object per line in ``results.jsonl``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

RESULTS = "results.jsonl"


class Recorder:
    """Appends records (flushed at once, so a stage killed by its time limit keeps what it measured)."""

    def __init__(self, out: Path, stage: str) -> None:
        self.path = out / RESULTS
        self.stage = stage

    def __call__(self, kind: str, **fields: Any) -> None:
        record = {"stage": self.stage, "kind": kind, "time": round(time.time(), 1), **fields}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record, default=str) + "\n")
        print(f"[{self.stage}] {kind}: {json.dumps(fields, default=str)[:400]}", flush=True)


def read_records(out: Path) -> list[dict[str, Any]]:
    path = out / RESULTS
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
