"""GPU utilization, memory and power on ``/metrics``, read through NVML (``pynvml``, from the
``nvidia-ml-py`` package) at scrape time. Without the package, a driver or a GPU, nothing is
exposed and nothing fails. A reading a device does not support (e.g. utilization under MIG) is
left out for that device.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

log = logging.getLogger("kiln.server.metrics")
T = TypeVar("T")


class Nvml(Protocol):
    """The part of ``pynvml`` read here (tests pass a fake)."""

    def nvmlInit(self) -> None: ...  # noqa: N802
    def nvmlDeviceGetCount(self) -> int: ...  # noqa: N802
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...  # noqa: N802
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...  # noqa: N802
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...  # noqa: N802
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...  # noqa: N802
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...  # noqa: N802
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...  # noqa: N802


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One device at one scrape; None where the device would not say."""

    index: int
    uuid: str
    name: str
    utilization_ratio: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    power_watts: float | None


def load_nvml() -> Nvml | None:
    """``pynvml``, initialised; None (logged once at info) without the package, a driver or a GPU."""
    try:
        nvml: Nvml = importlib.import_module("pynvml")
        nvml.nvmlInit()
    except Exception as error:
        log.info("GPU metrics off: NVML is not available (%s)", error)
        return None
    return nvml


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _try(read: Callable[[Any], T], handle: Any) -> T | None:
    try:
        return read(handle)
    except Exception:
        return None


def read_gpus(nvml: Nvml) -> list[GpuSample]:
    """A sample of every device NVML sees."""
    samples = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        uuid = _try(nvml.nvmlDeviceGetUUID, handle)
        name = _try(nvml.nvmlDeviceGetName, handle)
        util = _try(nvml.nvmlDeviceGetUtilizationRates, handle)
        memory = _try(nvml.nvmlDeviceGetMemoryInfo, handle)
        power_mw = _try(nvml.nvmlDeviceGetPowerUsage, handle)
        samples.append(
            GpuSample(
                index=index,
                uuid=f"gpu-{index}" if uuid is None else _text(uuid),
                name="unknown" if name is None else _text(name),
                utilization_ratio=None if util is None else float(util.gpu) / 100.0,
                memory_used_bytes=None if memory is None else int(memory.used),
                memory_total_bytes=None if memory is None else int(memory.total),
                power_watts=None if power_mw is None else power_mw / 1000.0,
            )
        )
    return samples


def gpu_families(samples: list[GpuSample]) -> list[Metric]:
    """The GPU families of one scrape, labelled by ``gpu_uuid`` (Triton's label)."""
    info = GaugeMetricFamily(
        "kiln_gpu_info", "1 per GPU, with its index and name.", labels=["gpu_uuid", "index", "name"]
    )
    gauges = {
        "utilization_ratio": GaugeMetricFamily(
            "kiln_gpu_utilization_ratio",
            "Fraction of the last sample period with a kernel running (0-1).",
            labels=["gpu_uuid"],
        ),
        "memory_used_bytes": GaugeMetricFamily(
            "kiln_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu_uuid"]
        ),
        "memory_total_bytes": GaugeMetricFamily(
            "kiln_gpu_memory_total_bytes", "GPU memory in all.", labels=["gpu_uuid"]
        ),
        "power_watts": GaugeMetricFamily("kiln_gpu_power_watts", "GPU power draw.", labels=["gpu_uuid"]),
    }
    for s in samples:
        info.add_metric([s.uuid, str(s.index), s.name], 1.0)
        for attr, family in gauges.items():
            value = getattr(s, attr)
            if value is not None:
                family.add_metric([s.uuid], float(value))
    return [info, *gauges.values()]


class GpuCollector:
    """Collects GPU families from ``nvml`` (default: :func:`load_nvml`). A failing scrape of NVML
    is logged and yields no GPU families rather than breaking ``/metrics``."""

    def __init__(self, nvml: Nvml | None = None) -> None:
        self.nvml = nvml

    @classmethod
    def detect(cls) -> GpuCollector | None:
        nvml = load_nvml()
        return None if nvml is None else cls(nvml)

    def collect(self) -> Iterator[Metric]:
        if self.nvml is None:
            return
        try:
            samples = read_gpus(self.nvml)
        except Exception:
            log.exception("reading GPU metrics from NVML failed")
            return
        yield from gpu_families(samples)
