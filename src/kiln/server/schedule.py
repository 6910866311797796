"""Per-request schedule parameters, Triton's way, turned into the runtime's.

``priority``: Triton levels ``1..priority_levels``, 1 the highest; 0 or absent means the default
level. The runtime runs higher numbers first, so level ``p`` becomes ``priority_levels - p``.
``timeout``: microseconds the request may wait before it starts running; 0 or absent means none.
A gRPC deadline, when the client set one, caps the timeout; one already past is refused at once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from kiln.errors import DeadlineExceeded, InvalidInput, describe


@dataclass(frozen=True, slots=True)
class Schedule:
    """What the runtime gets: its priority (higher runs first) and the request's timeout."""

    priority: int
    timeout_s: float | None


@functools.cache
def _default(levels: int, default_level: int) -> Schedule:
    return Schedule(levels - default_level, None)


def _int_parameter(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise InvalidInput(describe(f"parameter {name!r} must be a whole number", seen=value))
    return int(value)


def plan_schedule(
    priority: object,
    timeout_us: object,
    *,
    levels: int,
    default_level: int,
    remaining_s: float | None = None,
) -> Schedule:
    """The runtime schedule of one request. ``InvalidInput`` for a priority outside
    ``0..levels`` or a negative timeout; ``DeadlineExceeded`` when ``remaining_s`` (time left
    before the client's deadline) is already used up."""
    if priority is None and timeout_us is None and remaining_s is None:
        return _default(levels, default_level)
    level = default_level if priority is None else _int_parameter("priority", priority)
    if level == 0:
        level = default_level
    if not 1 <= level <= levels:
        raise InvalidInput(
            describe(
                "parameter 'priority' is out of range",
                seen=level,
                fix=f"use 1 (highest) to {levels}, or 0 for the default level {default_level}",
            )
        )
    timeout_s: float | None = None
    if timeout_us is not None:
        micros = _int_parameter("timeout", timeout_us)
        if micros < 0:
            raise InvalidInput(
                describe("parameter 'timeout' is negative", seen=micros, fix="give microseconds >= 0")
            )
        timeout_s = micros / 1e6 if micros > 0 else None
    if remaining_s is not None:
        if remaining_s <= 0:
            raise DeadlineExceeded(
                describe("the request's deadline had passed when it arrived", seen=f"{remaining_s:.6f}s left")
            )
        timeout_s = remaining_s if timeout_s is None else min(timeout_s, remaining_s)
    return Schedule(levels - level, timeout_s)
