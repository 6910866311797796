"""Sticky CUDA errors: recognising them, and remembering that this process's device is poisoned.

An illegal memory access, a launch failure, a device-side assert (and a few others) leave the CUDA
context unusable for the rest of the process: every later call fails, and only a restart clears
it. When one is seen, the device is marked poisoned *for the whole process*: every torch engine and
instance then raises ``EngineDead`` at once, without touching CUDA, so the runtime routes traffic
to the CPU fallback and reports the process not-live, and the orchestrator restarts it.
Out-of-memory and other errors are transient (``EngineFailed``): the instance is rebuilt and the
batch retried.
"""

from __future__ import annotations

import logging
import threading

from kiln.errors import EngineDead, EngineFailed, KilnError, describe

log = logging.getLogger(__name__)

STICKY_MARKERS: tuple[str, ...] = (
    "illegal memory access",
    "unspecified launch failure",
    "device-side assert",
    "misaligned address",
    "illegal instruction",
    "hardware stack error",
    "uncorrectable ecc error",
    "an illegal address",
    "invalid program counter",
    "launch timed out",
    "cuda_error_illegal_address",
    "cudaerrorillegaladdress",
    "cudaerrorlaunchfailure",
)
"""Lower-case fragments of CUDA error messages that poison the context (CUDA's own error strings)."""


class _Health:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reason: str | None = None


_STATE = _Health()


def is_sticky(error: BaseException) -> bool:
    """True for a CUDA error that leaves the context unusable (see ``STICKY_MARKERS``)."""
    text = str(error).lower()
    return any(marker in text for marker in STICKY_MARKERS)


def poisoned() -> str | None:
    """Why this process's CUDA device is unusable, or ``None`` while it is fine."""
    return _STATE.reason


def mark_poisoned(reason: str) -> None:
    with _STATE.lock:
        if _STATE.reason is None:
            log.critical("CUDA device poisoned; the process must be restarted: %s", reason)
            _STATE.reason = reason


def reset_for_tests() -> None:
    """Forget a poisoning (tests only: a real sticky error is never cleared in-process)."""
    with _STATE.lock:
        _STATE.reason = None


def check_alive(what: str) -> None:
    """``EngineDead`` at once when the device is poisoned."""
    reason = _STATE.reason
    if reason is not None:
        raise EngineDead(
            describe(
                f"{what}: this process's CUDA device is unusable after a sticky error",
                seen=reason,
                fix="restart the process (its liveness check fails); traffic goes to the CPU fallback",
            )
        )


def map_device_error(error: BaseException, what: str) -> KilnError:
    """kiln's error for an exception raised while running on the device (see the module docstring)."""
    if isinstance(error, KilnError):
        return error
    text = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    if is_sticky(error):
        mark_poisoned(text[:300])
        return EngineDead(
            describe(
                f"{what}: sticky CUDA error",
                seen=text[:300],
                fix="the process must be restarted; traffic goes to the CPU fallback meanwhile",
            )
        )
    if "out of memory" in text.lower():
        return EngineFailed(describe(f"{what}: the device ran out of memory", seen=text[:300], fix="retried"))
    return EngineFailed(describe(f"{what} failed", seen=text[:300], fix="retried on a new instance"))
