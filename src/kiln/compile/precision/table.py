"""The stored INT8 calibration table: activation tensor -> (low, high), as a small JSON file.

```text
{"format": "kiln-calibration", "version": 1, "method": "entropy",
 "ranges": {"x": [-3.0, 3.0], "h1": [0.0, 5.25]}}
```

Ranges are float32 values written exactly, so a table read back builds the same model as the
calibration that wrote it. Writes are atomic (temporary file + rename).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiln.errors import ConfigError, describe

TABLE_FORMAT = "kiln-calibration"
TABLE_VERSION = 1


@dataclass(frozen=True)
class CalibrationFile:
    """A calibration table as stored: the ranges and the method that chose them."""

    ranges: Mapping[str, tuple[float, float]]
    method: str
    version: int = TABLE_VERSION


def as_float32_range(low: float, high: float) -> tuple[float, float]:
    """A range rounded to float32, the precision the quantizer uses (so JSON round trips are exact)."""
    return (float(np.float32(low)), float(np.float32(high)))


def save_table(ranges: Mapping[str, tuple[float, float]], path: Path, *, method: str) -> None:
    payload = {
        "format": TABLE_FORMAT,
        "version": TABLE_VERSION,
        "method": method,
        "ranges": {name: list(as_float32_range(*ranges[name])) for name in sorted(ranges)},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_table(path: Path) -> CalibrationFile:
    """Read and check a table. ``ConfigError`` naming the file and what is wrong with it."""
    path = Path(path)
    fix = "delete it and calibrate again (kiln build --calibration DIR)"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(describe("calibration table not found", seen=str(path), fix=fix)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            describe(f"calibration table {path} is not readable JSON", seen=str(exc)[:120], fix=fix)
        ) from None
    if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
        raise ConfigError(describe(f"{path} is not a kiln calibration table", fix=fix))
    version = data.get("version")
    if version != TABLE_VERSION:
        raise ConfigError(
            describe(
                f"calibration table {path} has format version {version!r}, kiln reads {TABLE_VERSION}",
                fix=fix,
            )
        )
    ranges = data.get("ranges")
    if not isinstance(ranges, dict):
        raise ConfigError(describe(f"calibration table {path} has no 'ranges' object", fix=fix))
    return CalibrationFile(
        ranges={str(name): _range(path, str(name), value, fix) for name, value in ranges.items()},
        method=str(data.get("method", "unknown")),
        version=TABLE_VERSION,
    )


def _range(path: Path, name: str, value: object, fix: str) -> tuple[float, float]:
    ok = (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        and value[0] <= value[1]
    )
    if not ok:
        raise ConfigError(
            describe(
                f"calibration table {path}: tensor {name!r} needs [low, high] with finite low <= high",
                seen=value,
                fix=fix,
            )
        )
    assert isinstance(value, list)
    return (float(value[0]), float(value[1]))
