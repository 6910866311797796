from __future__ import annotations

import pytest

from kiln.errors import ConfigError
from kiln.server.config import ServerConfig, server_config


def test_defaults_are_triton_ports_and_open_access() -> None:
    config = ServerConfig()
    assert (config.http_port, config.grpc_port) == (8000, 8001)
    assert config.api_keys_file is None
    assert config.admin_token is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"http_port": 70000}, "http_port"),
        ({"admin_token": "short"}, "admin_token"),
        (
            {"priority_levels": 2, "default_priority_level": 3},
            "default_priority_level 3 is above priority_levels 2",
        ),
        ({"http_prot": 1}, "http_prot"),
        ({"drain_timeout_s": 0}, "drain_timeout_s"),
    ],
)
def test_bad_values_are_config_errors_naming_the_field(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        server_config(**values)
