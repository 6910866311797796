"""``kiln_repository_version_state``: the model repository's view of every version, as its index
shows it (READY, LOADING, UNLOADING, UNAVAILABLE, FAILED). Unlike ``kiln_version_state`` (the
runtime's versions) it also shows versions that never reached the runtime: a build or accuracy
check that failed, a version waiting for a build slot."""

from __future__ import annotations

from collections.abc import Iterator
from typing import get_args

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from kiln.repository.control import IndexState, ModelControl

INDEX_STATES: tuple[str, ...] = get_args(IndexState)


class RepositoryCollector:
    """Reads ``control.index()`` at scrape time."""

    def __init__(self, control: ModelControl) -> None:
        self.control = control

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "kiln_repository_version_state",
            "1 for the state the model repository shows for the version, 0 for the others.",
            labels=["model", "version", "state"],
        )
        for entry in self.control.index():
            for state in INDEX_STATES:
                family.add_metric([entry.name, entry.version, state], float(entry.state == state))
        yield family
