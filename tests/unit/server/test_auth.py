from __future__ import annotations

from pathlib import Path

import pytest

from kiln.errors import ConfigError, Unauthorized
from kiln.server.auth import Authenticator, create_authenticator, credential_from, load_api_keys

ACME = "acme-0123456789abcdef"
GLOBEX = "globex-0123456789abcdef"
ADMIN = "admin-token-0123456789"


def test_open_server_counts_everyone_as_default() -> None:
    auth = Authenticator()
    assert auth.is_open
    assert auth.tenant(None) == "default"
    assert auth.tenant("anything") == "default"
    auth.check_admin(None)


def test_keys_identify_tenants_and_unknown_or_missing_keys_are_refused() -> None:
    auth = Authenticator({ACME: "acme", GLOBEX: "globex"})
    assert auth.tenant(ACME) == "acme"
    assert auth.tenant(GLOBEX) == "globex"
    with pytest.raises(Unauthorized, match="missing API key"):
        auth.tenant(None)
    with pytest.raises(Unauthorized, match="unknown API key") as caught:
        auth.tenant("acme-0123456789abcdeX")
    assert "acme-0123456789abcdeX" not in str(caught.value)


def test_admin_endpoints_need_the_admin_token() -> None:
    auth = Authenticator({ACME: "acme"}, ADMIN)
    auth.check_admin(ADMIN)
    with pytest.raises(Unauthorized, match="admin token"):
        auth.check_admin(ACME)
    with pytest.raises(Unauthorized, match="admin token"):
        auth.check_admin(None)
    assert auth.tenant(ADMIN) == "admin"


def test_admin_endpoints_are_closed_when_keys_exist_but_no_admin_token() -> None:
    with pytest.raises(Unauthorized, match="no admin token is configured"):
        Authenticator({ACME: "acme"}).check_admin(ACME)


def test_admin_token_alone_guards_admin_endpoints_and_leaves_inference_open() -> None:
    auth = Authenticator({}, ADMIN)
    assert auth.tenant(None) == "default"
    with pytest.raises(Unauthorized):
        auth.check_admin(None)


def test_credential_comes_from_x_api_key_or_a_bearer_token() -> None:
    assert credential_from("k1", "Bearer k2") == "k1"
    assert credential_from(None, "Bearer k2") == "k2"
    assert credential_from(None, "bearer  k3 ") == "k3"
    assert credential_from(None, "Basic dXNlcjpw") is None
    assert credential_from(None, None) is None


def test_keys_file_is_read_into_key_to_tenant(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(f"tenants:\n  acme:\n    keys: [{ACME}]\n  globex:\n    keys: [{GLOBEX}]\n")
    assert load_api_keys(path) == {ACME: "acme", GLOBEX: "globex"}
    assert create_authenticator(path, None).tenant(GLOBEX) == "globex"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tenants:\n  acme:\n    keys: [short]\n", "too short"),
        (f"tenants:\n  a:\n    keys: [{ACME}]\n  b:\n    keys: [{ACME}]\n", "both 'a' and 'b'"),
        (f"tenants:\n  acme:\n    key: [{ACME}]\n", "tenants.acme.key"),
        ("tenants: [", "not valid YAML"),
        (f"tenants:\n  admin:\n    keys: [{ACME}]\n", "invalid tenant name"),
    ],
)
def test_bad_keys_files_are_refused_with_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_api_keys(path)


def test_missing_keys_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the API-keys file"):
        load_api_keys(tmp_path / "nope.yaml")
