"""API keys and the admin token.

Tenants are named in a YAML file, each with one or more API keys::

    tenants:
      acme:
        keys: ["acme-7c1d0e9a44b2f6aa"]
      globex:
        keys: ["globex-51f0aa93c3d18e27", "globex-rotated-2f9e0b4c"]

A client sends its key in the ``x-api-key`` header (gRPC: metadata) or as
``Authorization: Bearer <key>``. With keys configured, a missing or unknown key is refused
(``Unauthorized``: HTTP 401, gRPC UNAUTHENTICATED). Admin endpoints (repository load/unload,
``/v2/admin/...``) need the admin token, sent the same way. With no keys and no admin token
configured, everything is open and requests are counted for the tenant ``default``.

Secrets are compared in constant time (SHA-256 digests, every entry compared, no early exit).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kiln.errors import ConfigError, Unauthorized, describe

DEFAULT_TENANT = "default"
ADMIN_TENANT = "admin"
API_KEY_HEADER = "x-api-key"
AUTHORIZATION_HEADER = "authorization"
MIN_KEY_LENGTH = 16


class TenantKeys(BaseModel):
    """One tenant's API keys (several, so a key can be rotated without downtime)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: list[str] = Field(min_length=1, description="API keys of this tenant, 16+ characters each.")


class ApiKeysFile(BaseModel):
    """The API-keys file: tenant name -> its keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenants: dict[str, TenantKeys] = Field(description="Tenants by name.")


def load_api_keys(path: Path) -> dict[str, str]:
    """Read an API-keys file; key -> tenant. ``ConfigError`` naming the file and the problem."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(describe("cannot read the API-keys file", seen=str(path), fix=str(exc))) from None
    except yaml.YAMLError as exc:
        raise ConfigError(describe(f"API-keys file {path} is not valid YAML", fix=str(exc))) from None
    try:
        parsed = ApiKeysFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(
            describe(f"API-keys file {path} is invalid: {problems}", fix="see the example in docs/server.md")
        ) from None
    return keys_by_tenant(parsed)


def keys_by_tenant(parsed: ApiKeysFile) -> dict[str, str]:
    """Flatten and check: every key long enough and owned by one tenant only."""
    owner: dict[str, str] = {}
    for tenant, entry in parsed.tenants.items():
        if not tenant or tenant == ADMIN_TENANT:
            raise ConfigError(
                describe("invalid tenant name", seen=tenant, fix=f"use a name other than {ADMIN_TENANT!r}")
            )
        for key in entry.keys:
            if len(key) < MIN_KEY_LENGTH:
                raise ConfigError(
                    describe(
                        f"an API key of tenant {tenant!r} is too short",
                        seen=f"{len(key)} characters",
                        fix=f"use at least {MIN_KEY_LENGTH} random characters",
                    )
                )
            if key in owner:
                raise ConfigError(
                    describe(
                        f"one API key is given to both {owner[key]!r} and {tenant!r}",
                        fix="give each tenant its own keys",
                    )
                )
            owner[key] = tenant
    return owner


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Authenticator:
    """Decides who a request is from. Thread-safe (immutable after construction)."""

    def __init__(self, keys: Mapping[str, str] | None = None, admin_token: str | None = None) -> None:
        self._entries = tuple((_digest(key), tenant) for key, tenant in (keys or {}).items())
        self._admin = _digest(admin_token) if admin_token else None
        self.is_open = not self._entries and self._admin is None

    def tenant(self, credential: str | None) -> str:
        """The tenant a credential belongs to; ``Unauthorized`` when keys are configured and the
        credential is missing or unknown. The admin token counts as the tenant ``admin``."""
        if not self._entries:
            if credential is not None and self._admin is not None and self._is_admin(credential):
                return ADMIN_TENANT
            return DEFAULT_TENANT
        if credential is None:
            raise Unauthorized(
                describe(
                    "missing API key",
                    fix=f"send it in the {API_KEY_HEADER} header or as 'Authorization: Bearer <key>'",
                )
            )
        digest = _digest(credential)
        found: str | None = None
        for key_digest, tenant in self._entries:
            if hmac.compare_digest(digest, key_digest):
                found = tenant
        if found is None and self._admin is not None and hmac.compare_digest(digest, self._admin):
            found = ADMIN_TENANT
        if found is None:
            raise Unauthorized(
                describe(
                    "unknown API key",
                    seen=f"a key of {len(credential)} characters",
                    fix="check the key you send",
                )
            )
        return found

    def check_admin(self, credential: str | None) -> None:
        """Pass when the credential is the admin token (or nothing is configured at all)."""
        if self.is_open:
            return
        if self._admin is None:
            raise Unauthorized(
                describe(
                    "admin endpoints are disabled: no admin token is configured",
                    fix="start the server with an admin token",
                )
            )
        if credential is None or not self._is_admin(credential):
            raise Unauthorized(
                describe(
                    "this endpoint needs the admin token",
                    fix=f"send it in the {API_KEY_HEADER} header or as a Bearer token",
                )
            )

    def _is_admin(self, credential: str) -> bool:
        return self._admin is not None and hmac.compare_digest(_digest(credential), self._admin)


def credential_from(api_key: str | None, authorization: str | None) -> str | None:
    """The credential a request carries: ``x-api-key`` first, else an ``Authorization: Bearer``."""
    if api_key:
        return api_key
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


def create_authenticator(api_keys_file: Path | None, admin_token: str | None) -> Authenticator:
    """The authenticator for a server config (keys read from the file when given)."""
    keys = load_api_keys(api_keys_file) if api_keys_file is not None else {}
    return Authenticator(keys, admin_token)
