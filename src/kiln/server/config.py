"""The server's knobs: where it listens, how big a request may be, how it drains, how schedule
parameters map onto the runtime. Parsed at the edge (CLI, files) with pydantic; ``extra="forbid"``
so a misspelt option is an error, not a silent default."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kiln.errors import ConfigError, describe

MIB = 1 << 20


class ServerConfig(BaseModel):
    """How one kiln server process listens and behaves. Every field has a safe default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="0.0.0.0", description="Address the HTTP and gRPC servers listen on.")
    http_port: int = Field(
        default=8000,
        ge=0,
        le=65535,
        description="HTTP port (KServe v2 REST and /metrics); 0 = any free port.",
    )
    grpc_port: int | None = Field(
        default=8001, ge=0, le=65535, description="gRPC port; 0 = any free port; unset = no gRPC server."
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Server processes. 1: this process serves. N > 1 (Linux): a supervisor starts N "
        "worker processes sharing the ports (SO_REUSEPORT), restarts any that dies.",
    )
    api_keys_file: Path | None = Field(
        default=None, description="YAML file of tenants and their API keys; unset = no keys (open)."
    )
    admin_token: str | None = Field(
        default=None, min_length=16, description="Token for repository and admin endpoints (16+ characters)."
    )
    max_request_bytes: int = Field(
        default=64 * MIB, ge=1024, description="Largest HTTP request body; larger ones get 413."
    )
    grpc_max_message_bytes: int = Field(
        default=64 * MIB,
        ge=1024,
        le=2**31 - 1,
        description="Largest gRPC message received; larger ones get RESOURCE_EXHAUSTED.",
    )
    keep_alive_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="How long an idle HTTP keep-alive connection stays open before the server closes it.",
    )
    drain_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="On SIGTERM/SIGINT, longest wait for in-flight requests before closing.",
    )
    priority_levels: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Request priority levels: 1 is the highest (Triton's convention).",
    )
    default_priority_level: int = Field(
        default=2, ge=1, description="Level of requests that give no priority (or priority 0)."
    )
    server_name: str = Field(
        default="kiln", min_length=1, description="Name reported by server metadata (GET /v2)."
    )

    @model_validator(mode="after")
    def _check_levels(self) -> ServerConfig:
        if self.default_priority_level > self.priority_levels:
            raise ValueError(
                f"default_priority_level {self.default_priority_level} is above priority_levels "
                f"{self.priority_levels}; use a level in 1..{self.priority_levels}"
            )
        return self


def server_config(**values: object) -> ServerConfig:
    """Build a :class:`ServerConfig`, turning pydantic's validation error into ``ConfigError``."""
    try:
        return ServerConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']} (seen: {e.get('input')!r})"
            for e in exc.errors()
        )
        raise ConfigError(
            describe(f"invalid server config: {problems}", fix="see `kiln serve --help`")
        ) from None
