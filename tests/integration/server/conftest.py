"""Fixtures: engines built once per session, and a server per test module (see server_harness)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from server_harness import Factories, Served, free_config, start_served
from server_models import EngineBuilder, ctr_model, pair_model


@pytest.fixture(scope="session")
def factories(tmp_path_factory: pytest.TempPathFactory) -> Factories:
    builder = EngineBuilder(tmp_path_factory.mktemp("engines"))
    ctr = builder.build(ctr_model(), max_batch_size=16)
    pair = builder.build(pair_model(), max_batch_size=8)
    return Factories(builder.factory(ctr), builder.factory(pair))


@pytest.fixture(scope="module")
def served(factories: Factories) -> Iterator[Served]:
    """A server shared by a test module. Tests must leave ``ctr`` and ``pair`` loaded."""
    running = start_served(factories, free_config())
    yield running
    running.server.stop()
