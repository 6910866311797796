"""The example repository ``kiln demo`` writes: configs that build exactly the demo's int8
engines (so serving finds them in the cache), and client commands naming the real addresses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kiln.cli.demo_serve import client_commands, repository_config
from kiln.examples import EXAMPLES
from kiln.examples.recipes import build_spec as recipe_spec
from kiln.repository.config import parse_model_config
from kiln.repository.convert import build_spec


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_the_config_builds_the_recipe_engine(name: str) -> None:
    text = yaml.safe_dump(repository_config(name, "tiny"), sort_keys=False)
    config = parse_model_config(text, where=f"{name}/config.yaml")

    wanted = recipe_spec(name, "int8", size="tiny", max_accuracy_drop=config.accuracy.max_accuracy_drop)

    assert build_spec(config).cache_factors() == wanted.cache_factors()


def test_client_commands_name_the_servers_addresses() -> None:
    lines = client_commands("127.0.0.1:8123", "127.0.0.1:8124", Path("/r"), "ctr")

    assert any(
        "http://127.0.0.1:8123/v2/models/ctr/infer" in line and "@/r/ctr/request.json" in line
        for line in lines
    )
    assert any(line.startswith("perf_analyzer -m ctr -u 127.0.0.1:8124 -i grpc") for line in lines)
    http_only = client_commands("127.0.0.1:8123", None, Path("/r"), "ctr")
    assert any(line.startswith("perf_analyzer -m ctr -u 127.0.0.1:8123 ") for line in http_only)
