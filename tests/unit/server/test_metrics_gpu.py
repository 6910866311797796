"""GPU metrics over a fake NVML (the real one needs a driver and a GPU)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from metrics_scrape import parse, value

from kiln.server import metrics_gpu
from kiln.server.metrics import ServerMetrics
from kiln.server.metrics_gpu import GpuCollector, load_nvml, read_gpus


class NVMLError(Exception):
    pass


@dataclass
class FakeDevice:
    uuid: str | bytes
    name: str | bytes
    util_percent: int | None
    used: int
    total: int
    power_mw: int | None


class FakeNvml:
    """pynvml's functions over a list of devices; None readings raise like NOT_SUPPORTED does."""

    def __init__(
        self, devices: list[FakeDevice], *, fail_init: bool = False, fail_count: bool = False
    ) -> None:
        self.devices = devices
        self.fail_init = fail_init
        self.fail_count = fail_count
        self.initialised = False

    def nvmlInit(self) -> None:  # noqa: N802
        if self.fail_init:
            raise NVMLError("Driver Not Loaded")
        self.initialised = True

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        if self.fail_count:
            raise NVMLError("Unknown Error")
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:  # noqa: N802
        return self.devices[index]

    def nvmlDeviceGetUUID(self, handle: FakeDevice) -> str | bytes:  # noqa: N802
        return handle.uuid

    def nvmlDeviceGetName(self, handle: FakeDevice) -> str | bytes:  # noqa: N802
        return handle.name

    def nvmlDeviceGetUtilizationRates(self, handle: FakeDevice) -> Any:  # noqa: N802
        if handle.util_percent is None:
            raise NVMLError("Not Supported")
        return SimpleNamespace(gpu=handle.util_percent, memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDevice) -> Any:  # noqa: N802
        return SimpleNamespace(total=handle.total, used=handle.used, free=handle.total - handle.used)

    def nvmlDeviceGetPowerUsage(self, handle: FakeDevice) -> int:  # noqa: N802
        if handle.power_mw is None:
            raise NVMLError("Not Supported")
        return handle.power_mw


H100 = FakeDevice("GPU-aaaa", "NVIDIA H100 80GB HBM3", 73, 20 * 2**30, 80 * 2**30, 350_500)
MIG = FakeDevice(b"GPU-bbbb", b"NVIDIA H200", None, 2**30, 141 * 2**30, None)


def test_samples_per_device_with_missing_readings_left_out() -> None:
    samples = read_gpus(FakeNvml([H100, MIG]))
    assert [s.uuid for s in samples] == ["GPU-aaaa", "GPU-bbbb"]
    assert samples[0].utilization_ratio == 0.73
    assert samples[0].power_watts == 350.5
    assert samples[1].name == "NVIDIA H200"
    assert samples[1].utilization_ratio is None
    assert samples[1].power_watts is None
    assert samples[1].memory_total_bytes == 141 * 2**30


def test_gpu_families_on_the_scrape() -> None:
    metrics = ServerMetrics(gpu=GpuCollector(FakeNvml([H100, MIG])), process=False)
    s = parse(metrics.text())
    assert value(s, "kiln_gpu_utilization_ratio", gpu_uuid="GPU-aaaa") == 0.73
    assert value(s, "kiln_gpu_memory_used_bytes", gpu_uuid="GPU-aaaa") == 20 * 2**30
    assert value(s, "kiln_gpu_memory_total_bytes", gpu_uuid="GPU-bbbb") == 141 * 2**30
    assert value(s, "kiln_gpu_power_watts", gpu_uuid="GPU-aaaa") == 350.5
    assert value(s, "kiln_gpu_info", gpu_uuid="GPU-bbbb", index="1", name="NVIDIA H200") == 1
    assert ("kiln_gpu_utilization_ratio", frozenset({("gpu_uuid", "GPU-bbbb")})) not in s


def test_a_failing_nvml_scrape_yields_no_gpu_metrics(caplog: pytest.LogCaptureFixture) -> None:
    metrics = ServerMetrics(gpu=GpuCollector(FakeNvml([H100], fail_count=True)), process=False)
    with caplog.at_level(logging.ERROR, logger="kiln.server.metrics"):
        s = parse(metrics.text())
    assert not any(name.startswith("kiln_gpu_") for name, _ in s)
    assert "NVML failed" in caplog.text


def test_load_nvml_without_the_package_or_a_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> object:
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(metrics_gpu.importlib, "import_module", missing)
    assert load_nvml() is None
    assert GpuCollector.detect() is None
    monkeypatch.setattr(metrics_gpu.importlib, "import_module", lambda name: FakeNvml([], fail_init=True))
    assert load_nvml() is None


def test_load_nvml_initialises_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml([H100])
    monkeypatch.setattr(metrics_gpu.importlib, "import_module", lambda name: fake)
    collector = GpuCollector.detect()
    assert collector is not None
    assert fake.initialised
    assert (
        value(
            parse(ServerMetrics(gpu=collector, process=False).text()),
            "kiln_gpu_utilization_ratio",
            gpu_uuid="GPU-aaaa",
        )
        == 0.73
    )
