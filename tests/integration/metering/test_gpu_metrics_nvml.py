"""GPU metrics through the real NVML (``pynvml`` from nvidia-ml-py); skipped without it or a GPU."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kiln.server.metrics import ServerMetrics
from kiln.server.metrics_gpu import GpuCollector, load_nvml


def test_every_gpu_reports_memory_and_a_utilization_ratio() -> None:
    nvml = load_nvml()
    if nvml is None or nvml.nvmlDeviceGetCount() == 0:
        pytest.skip("no NVML or no NVIDIA GPU here")
    text = ServerMetrics(gpu=GpuCollector(nvml), process=False).text()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    uuids = {s.labels["gpu_uuid"] for s in samples if s.name == "kiln_gpu_info"}
    assert len(uuids) == nvml.nvmlDeviceGetCount()
    assert all(u.startswith(("GPU-", "MIG-")) for u in uuids)
    totals = {s.labels["gpu_uuid"]: s.value for s in samples if s.name == "kiln_gpu_memory_total_bytes"}
    used = {s.labels["gpu_uuid"]: s.value for s in samples if s.name == "kiln_gpu_memory_used_bytes"}
    assert set(totals) == uuids
    assert all(0 <= used[u] <= totals[u] for u in uuids)
    assert all(0.0 <= s.value <= 1.0 for s in samples if s.name == "kiln_gpu_utilization_ratio")
