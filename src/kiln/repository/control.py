"""The model-control contract between the server and the model repository.

The server's repository endpoints (`index`, `load`, `unload`, HTTP and gRPC) call a ``ModelControl``;
the model repository implements it. Calls return at once with a status the caller can poll: loading,
building and warming happen in the background and never block inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, TypeAlias, runtime_checkable

IndexState: TypeAlias = Literal["READY", "LOADING", "UNLOADING", "UNAVAILABLE", "FAILED"]
"""Triton's repository-index states (plus FAILED for a version that failed validation, build,
accuracy or warm-up; its reason says why)."""


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One model version as the repository index shows it."""

    name: str
    version: str
    state: IndexState
    reason: str = ""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "state": self.state, "reason": self.reason}


class ModelControl(Protocol):
    """Explicit model management, as the KServe/Triton repository extension exposes it."""

    def index(self, *, ready_only: bool = False) -> list[IndexEntry]:
        """Every model version the repository knows, with its state and reason."""

    def load(self, name: str) -> list[IndexEntry]:
        """Start loading (or reloading) ``name`` from the repository; returns at once.

        Raises ``ModelNotFound`` when the repository has no such model.
        """

    def unload(self, name: str) -> list[IndexEntry]:
        """Start unloading every version of ``name``; returns at once. ``ModelNotFound`` if unknown."""


@runtime_checkable
class RepositoryService(ModelControl, Protocol):
    """A model repository that runs on the server's event loop: ``kiln serve`` starts it before
    the server listens and closes it after the server has drained."""

    async def start(self) -> None:
        """Scan the repository, queue the builds of the versions to serve, start watching."""

    async def aclose(self) -> None:
        """Stop watching and building (the runtime stays the caller's to close)."""
