"""kiln's one exception hierarchy.

Every error a user can cause says three things: what was wrong, the value seen, and the fix.
Use :func:`describe` to build such a message. The server maps these classes to HTTP status codes in
``kiln.server.http.errors`` and to gRPC codes in ``kiln.server.grpc.errors``; internals (stack
traces, library messages) go to logs, not to clients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def describe(what: str, *, seen: object = None, fix: str | None = None) -> str:
    """Format one problem as ``what (seen: value); fix``, leaving out the parts not given."""
    text = what
    if seen is not None:
        text += f" (seen: {seen!r})" if not isinstance(seen, str) else f" (seen: {seen})"
    if fix:
        text += f"; {fix}"
    return text


class KilnError(Exception):
    """Base of every error kiln raises on purpose."""

    retryable: bool = False


class ConfigError(KilnError):
    """A configuration value, file or command-line option is invalid."""


class InvalidInput(KilnError):
    """A request's tensors do not fit the model (names, datatypes, shapes, values). Never retried."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a model: where (node, tensor or file), what, and what to do."""

    where: str
    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}; {self.fix}"


class ModelError(KilnError):
    """A model file failed loading or validation. Carries every problem found, not only the first."""

    def __init__(self, problems: Sequence[Problem] | str, *, path: str | None = None) -> None:
        if isinstance(problems, str):
            problems = [Problem(path or "model", problems, "check the model file")]
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.path = path
        head = f"model {path} is not usable" if path else "model is not usable"
        lines = [f"{head}: {len(self.problems)} problem(s)"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class BuildError(KilnError):
    """An engine could not be built from a valid model and spec."""


class AccuracyError(BuildError):
    """A built engine's accuracy against the fp32 reference fell below the configured bound."""


class RefitUnsupported(BuildError):
    """The backend cannot refit this artifact with new weights; the caller falls back to a full build."""


class CacheCorrupt(KilnError):
    """A cache entry failed its checksum; it is removed and rebuilt, never served."""


class CacheBusy(KilnError):
    """A cache key stayed locked by another builder longer than the caller was willing to wait."""

    retryable = True


class ModelNotFound(KilnError):
    """No model (or no such version of it) is known to the server or repository."""


class NotReady(KilnError):
    """The model exists but has no version that can serve right now."""

    retryable = True


class Overloaded(KilnError):
    """The queue is full; the request was rejected at once (load shedding)."""

    retryable = True


class DeadlineExceeded(KilnError):
    """The request's deadline passed before it could run."""


class Cancelled(KilnError):
    """The caller cancelled the request before it ran."""


class Unauthorized(KilnError):
    """A missing or unknown API key, or an admin call without the admin token."""


class EngineFailed(KilnError):
    """A transient engine failure: the instance is discarded, rebuilt, and the run retried."""

    retryable = True


class EngineDead(KilnError):
    """A fatal device error: the engine (and for CUDA, the process) cannot serve any more."""
