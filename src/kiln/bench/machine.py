"""The machine a benchmark ran on, for reports: CPU model, cores, load, library versions."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Machine:
    """Where a benchmark ran. ``load_avg`` is the 1/5/15-minute load when it started: the machine
    may be shared, and a load near the core count means the numbers are noisy."""

    cpu: str
    cores: int
    load_avg: tuple[float, float, float]
    python: str
    onnxruntime: str
    system: str

    def to_json(self) -> dict[str, object]:
        return {
            "cpu": self.cpu,
            "cores": self.cores,
            "load_avg": list(self.load_avg),
            "python": self.python,
            "onnxruntime": self.onnxruntime,
            "system": self.system,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Machine:
        load = data.get("load_avg") or [0.0, 0.0, 0.0]
        assert isinstance(load, list)
        return cls(
            str(data["cpu"]),
            int(data["cores"]),  # type: ignore[call-overload]
            (float(load[0]), float(load[1]), float(load[2])),
            str(data.get("python", "")),
            str(data.get("onnxruntime", "")),
            str(data.get("system", "")),
        )

    def line(self) -> str:
        load = "/".join(f"{x:.2f}" for x in self.load_avg)
        return (
            f"{self.cpu}, {self.cores} cores, load {load}, Python {self.python}, "
            f"onnxruntime {self.onnxruntime}"
        )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> Machine:
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    try:
        import onnxruntime  # noqa: PLC0415

        ort = str(onnxruntime.__version__)
    except ImportError:
        ort = "not installed"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return Machine(
        cpu_model(),
        cores,
        (round(load[0], 2), round(load[1], 2), round(load[2], 2)),
        platform.python_version(),
        ort,
        f"{platform.system()} {platform.release()}",
    )
