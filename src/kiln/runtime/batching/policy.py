"""The batching decision: which waiting requests run next, as a pure function of (queue, now).

Requests are grouped by *batch key*: the version they are pinned to and the shapes of their inputs
past the batch axis, so only requests that can be joined are joined. For each group whose version
has a free instance the policy decides:

- run now when the group holds ``max_batch_size`` rows, when it can form a batch of exactly one of
  the preferred sizes that takes more of its rows than it leaves waiting (the largest such size),
  or when its oldest request has waited ``max_queue_delay``;
- with ``dispatch_when_idle``, also run now when no batch of the model is in flight: waiting for
  company is only worth it while the instances are busy, since requests that arrive during a run
  join the next batch anyway (so batches still grow with the load, and the delay bounds the wait
  while every instance is busy);
- otherwise wake up when that delay ends (or when the earliest deadline passes).

Within a group higher ``priority`` goes first, then arrival order; among ready groups the one whose
first request ranks highest runs. Expired and cancelled requests are reported so the caller drops
them before they run. The caller (the batcher) owns the queue, the futures and the threads.
"""

from __future__ import annotations

from collections.abc import Container, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from kiln.runtime.batching.buckets import pad_sizes, pick_bucket
from kiln.runtime.config import BatchingConfig

BatchKey: TypeAlias = tuple[int, Hashable]
"""(the pinned version's load id, the input shapes past the batch axis)."""


class QueuedRequest(Protocol):
    """What the policy reads of one waiting request."""

    @property
    def request_id(self) -> int: ...
    @property
    def key(self) -> BatchKey: ...
    @property
    def rows(self) -> int: ...
    @property
    def priority(self) -> int: ...
    @property
    def arrival_s(self) -> float: ...
    @property
    def deadline_s(self) -> float | None: ...
    @property
    def cancelled(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """The batching knobs in the form the policy uses them. ``pad_sizes``: the sizes batches are
    padded to for a version that names none of its own (``plan_batch``'s ``pad_sizes``): the
    buckets of an engine that prepares each shape."""

    max_batch_size: int
    max_queue_delay_s: float
    preferred: tuple[int, ...] = ()
    pad_sizes: tuple[int, ...] = ()
    dispatch_when_idle: bool = True

    @classmethod
    def from_config(cls, config: BatchingConfig) -> BatchLimits:
        preferred = config.preferred_batch_sizes
        pad = pad_sizes(
            preferred,
            config.max_batch_size,
            pad_to_preferred=config.pad_to_preferred,
            prepares_per_shape=True,
        )
        return cls(config.max_batch_size, config.max_queue_delay_s, preferred, pad, config.dispatch_when_idle)


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """One decision. ``run`` holds the request ids of the batch to start now (may be empty),
    ``padded_rows`` the rows the engine will see; ``expired``/``cancelled`` are to be dropped;
    ``wake_at_s`` is when to decide again if nothing else happens (``None``: only on a new event)."""

    run: tuple[int, ...] = ()
    key: BatchKey | None = None
    rows: int = 0
    padded_rows: int = 0
    expired: tuple[int, ...] = ()
    cancelled: tuple[int, ...] = ()
    wake_at_s: float | None = None


@dataclass(frozen=True, slots=True)
class _Ready:
    rank: tuple[int, float]
    key: BatchKey
    ids: tuple[int, ...]
    rows: int


def plan_batch(
    queue: Iterable[QueuedRequest],
    *,
    now_s: float,
    limits: BatchLimits,
    runnable: Container[int],
    in_flight: int = 0,
    pad_sizes: Mapping[int, Sequence[int]] | None = None,
) -> BatchPlan:
    """Decide what to run next. ``queue`` is in arrival order; ``runnable`` holds the load ids of
    versions with a free instance; ``in_flight`` counts the model's batches running now (any
    version); ``pad_sizes`` the sizes each version's batches are padded to, by load id
    (``kiln.runtime.batching.buckets.pad_sizes``; a version not in it: ``limits.pad_sizes``)."""
    idle = limits.dispatch_when_idle and in_flight == 0
    expired: list[int] = []
    cancelled: list[int] = []
    groups: dict[BatchKey, list[QueuedRequest]] = {}
    wake: float | None = None
    for request in queue:
        if request.cancelled:
            cancelled.append(request.request_id)
            continue
        deadline = request.deadline_s
        if deadline is not None:
            if deadline <= now_s:
                expired.append(request.request_id)
                continue
            wake = deadline if wake is None else min(wake, deadline)
        groups.setdefault(request.key, []).append(request)
    best: _Ready | None = None
    for key, members in groups.items():
        if key[0] not in runnable:
            continue
        ready = _evaluate(key, members, now_s, limits, idle=idle)
        if isinstance(ready, _Ready):
            if best is None or ready.rank > best.rank:
                best = ready
        else:
            wake = ready if wake is None else min(wake, ready)
    if best is None:
        return BatchPlan(expired=tuple(expired), cancelled=tuple(cancelled), wake_at_s=wake)
    return BatchPlan(
        run=best.ids,
        key=best.key,
        rows=best.rows,
        padded_rows=pick_bucket(best.rows, _pads(best.key[0], limits, pad_sizes)),
        expired=tuple(expired),
        cancelled=tuple(cancelled),
    )


def _pads(load_id: int, limits: BatchLimits, pad_sizes: Mapping[int, Sequence[int]] | None) -> Sequence[int]:
    if pad_sizes is None:
        return limits.pad_sizes
    return pad_sizes.get(load_id, limits.pad_sizes)


def _evaluate(
    key: BatchKey, members: list[QueuedRequest], now_s: float, limits: BatchLimits, *, idle: bool
) -> _Ready | float:
    """The batch this group would run now, or the time it becomes ready. ``idle``: nothing of the
    model runs, so nothing is gained by waiting."""
    first = members[0]
    if any(m.priority != first.priority for m in members):
        members = sorted(members, key=lambda m: -m.priority)  # stable: arrival order within a level
    head = members[0]
    rank = (head.priority, -head.arrival_s)
    pending = sum(m.rows for m in members)
    if idle or pending >= limits.max_batch_size or now_s >= first.arrival_s + limits.max_queue_delay_s:
        ids, rows = _take(members, limits.max_batch_size)
        return _Ready(rank, key, ids, rows)
    for size in reversed(limits.preferred):
        if size <= pending:
            ids, rows = _take(members, size)
            if rows == size and is_worth_running_early(rows, pending):
                return _Ready(rank, key, ids, rows)
    return first.arrival_s + limits.max_queue_delay_s


def is_worth_running_early(rows: int, pending: int) -> bool:
    """Whether a batch of exactly a preferred size (``rows``) may run before the delay while
    ``pending`` rows of its group wait: only when it takes more rows than it leaves behind. A small
    preferred size (1, say) never starts a batch of one while ten requests wait for a fuller one."""
    return rows > pending - rows


def _take(members: Sequence[QueuedRequest], max_rows: int) -> tuple[tuple[int, ...], int]:
    """Requests in order while they fit in ``max_rows`` (stops at the first that does not)."""
    ids: list[int] = []
    rows = 0
    for member in members:
        if rows + member.rows > max_rows:
            break
        ids.append(member.request_id)
        rows += member.rows
    return tuple(ids), rows
