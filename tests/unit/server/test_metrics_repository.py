"""kiln_repository_version_state: one sample per (model, version, state), 1 for the index's state."""

from __future__ import annotations

from kiln.repository.control import IndexEntry
from kiln.server.metrics_repository import INDEX_STATES, RepositoryCollector


class FixedIndex:
    def __init__(self, entries: list[IndexEntry]) -> None:
        self.entries = entries

    def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        return [e for e in self.entries if e.state == "READY" or not ready_only]

    def load(self, name: str) -> list[IndexEntry]:
        return []

    def unload(self, name: str) -> list[IndexEntry]:
        return []


def test_each_version_has_one_state_set() -> None:
    entries = [IndexEntry("ctr", "1", "READY"), IndexEntry("ctr", "2", "FAILED", "NaN in outputs")]
    (family,) = RepositoryCollector(FixedIndex(entries)).collect()

    values = {(s.labels["version"], s.labels["state"]): s.value for s in family.samples}

    assert family.name == "kiln_repository_version_state"
    assert len(values) == 2 * len(INDEX_STATES)
    assert {k for k, v in values.items() if v == 1.0} == {("1", "READY"), ("2", "FAILED")}
