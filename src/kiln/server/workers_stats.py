"""Model statistics of ``kiln serve --workers N``, merged over the workers. Pure: the sockets are in
:mod:`kiln.server.workers_admin`, the asking in :meth:`kiln.server.core.ServerCore.statistics`.

Each worker keeps statistics of the requests it served. The worker that takes a statistics call
asks every other worker for theirs (a read-only ``stats`` admin call) and merges the answers with
its own (:func:`merge_statistics`): per model and version, every ``{count, ns}`` pair and
``inference_count``/``execution_count`` are summed, ``batch_stats`` are summed per batch size,
``last_inference`` is the latest. A worker that does not answer within ``STATS_TIMEOUT_S`` is left
out, and the reply says so (:class:`StatisticsReply`: the ``kiln-worker`` and
``kiln-workers-missing`` headers, gRPC trailing metadata; :func:`combine_replies`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from kiln.server.admin_calls import PeerReply
from kiln.server.model_info import JSON

STATS_TIMEOUT_S = 2.0
"""How long the answering worker waits for each other worker's statistics (connecting and the
reply together) before leaving it out."""

WORKER_HEADER = "kiln-worker"
"""Which worker answered (its index)."""
MISSING_HEADER = "kiln-workers-missing"
"""The workers left out, as a comma list of indexes; only when some are."""

_SUMMED = ("inference_count", "execution_count")


@dataclass(frozen=True, slots=True)
class StatisticsReply:
    """A statistics answer: ``body``, the protocol JSON (``{"model_stats": [...]}``); for a worker
    of ``--workers N``, ``worker`` (its index; ``None`` for a single process) and ``missing`` (the
    workers left out because they did not answer in time; ``problems`` says why, per worker)."""

    body: JSON
    worker: int | None = None
    missing: tuple[int, ...] = ()
    problems: tuple[str, ...] = ()

    def headers(self) -> list[tuple[str, str]]:
        """HTTP headers (and gRPC trailing metadata) naming who answered and who is missing;
        none for a single process."""
        if self.worker is None:
            return []
        headers = [(WORKER_HEADER, str(self.worker))]
        if self.missing:
            headers.append((MISSING_HEADER, ",".join(map(str, self.missing))))
        return headers


def combine_replies(
    own: JSON, worker: int, replies: Sequence[PeerReply], version: str | None = None
) -> StatisticsReply:
    """Worker ``worker``'s statistics ``own`` merged with the other workers' ``stats`` replies.

    ``version``: keep only that version's entries of the replies (``own`` is already chosen).
    A worker that did not answer, answered with an error or with statistics that cannot be read
    is missing."""
    merged, missing, problems = own, [], []
    for reply in replies:
        try:
            if reply.status != 200:
                raise ValueError(reply.message or f"status {reply.status}")
            if reply.result is None:
                raise ValueError("the reply carries no statistics")
            theirs = _map(reply.result)
            entries = [e for e in _entries(theirs) if version is None or e["version"] == version]
            merged = merge_statistics([merged, {"model_stats": entries}])
        except ValueError as exc:
            missing.append(reply.worker)
            problems.append(f"worker {reply.worker}: {exc}")
    return StatisticsReply(merged, worker, tuple(missing), tuple(problems))


def merge_statistics(responses: Iterable[JSON]) -> JSON:
    """Merge statistics responses (``{"model_stats": [...]}``, one per worker) into one.

    Entries are matched on ``(name, version)`` and kept in order of first appearance; see the
    module docstring for how fields combine. ``memory_usage`` lists are joined (each worker holds
    its own copy of an engine). The inputs are not changed.
    """
    merged: dict[tuple[str, str], JSON] = {}
    for response in responses:
        for entry in _entries(response):
            key = (str(entry["name"]), str(entry["version"]))
            first = merged.get(key, {"name": key[0], "version": key[1]})  # every entry is read through
            merged[key] = merge_entry(first, entry)
    return {"model_stats": list(merged.values())}


def merge_entry(left: JSON, right: JSON) -> JSON:
    """One model version's statistics from two workers, combined (``left``'s order kept)."""
    result = _copy(left)
    result["last_inference"] = max(_int(left.get("last_inference")), _int(right.get("last_inference")))
    for name in _SUMMED:
        result[name] = _int(left.get(name)) + _int(right.get(name))
    result["inference_stats"] = _add_durations(
        _map(left.get("inference_stats")), _map(right.get("inference_stats"))
    )
    result["batch_stats"] = _merge_batches(_list(left.get("batch_stats")), _list(right.get("batch_stats")))
    result["memory_usage"] = [*_list(left.get("memory_usage")), *_list(right.get("memory_usage"))]
    return result


def _merge_batches(left: Sequence[object], right: Sequence[object]) -> list[JSON]:
    by_size: dict[int, JSON] = {}
    for batch in (*left, *right):
        entry = _map(batch)
        size = _int(entry.get("batch_size"))
        durations = _add_durations(by_size.get(size, {}), entry, skip="batch_size")
        by_size[size] = {"batch_size": size, **durations}
    return list(by_size.values())


def _add_durations(left: Mapping[str, object], right: Mapping[str, object], skip: str = "") -> JSON:
    """``{name: {count, ns}}`` maps added name by name (a name only one side has is kept)."""
    result: JSON = {}
    for name in (*left, *(n for n in right if n not in left)):
        if name == skip:
            continue
        a, b = _map(left.get(name)), _map(right.get(name))
        result[name] = {
            "count": _int(a.get("count")) + _int(b.get("count")),
            "ns": _int(a.get("ns")) + _int(b.get("ns")),
        }
    return result


def _entries(response: Mapping[str, object]) -> list[JSON]:
    entries = response.get("model_stats", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"statistics must hold a list of model_stats objects, got {entries!r:.200}")
    for entry in entries:
        if not isinstance(entry.get("name"), str) or not isinstance(entry.get("version"), str):
            raise ValueError(f"a model_stats entry must name its model and version, got {entry!r:.200}")
    return entries


def _copy(entry: Mapping[str, object]) -> JSON:
    """A deep enough copy: nested dicts and lists are new, so merging never changes an input."""
    copied: JSON = {}
    for name, value in entry.items():
        if isinstance(value, dict):
            copied[name] = _copy(value)
        elif isinstance(value, list):
            copied[name] = [_copy(v) if isinstance(v, dict) else v for v in value]
        else:
            copied[name] = value
    return copied


def _map(value: object) -> Mapping[str, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object in statistics, got {value!r:.200}")
    return value


def _list(value: object) -> Sequence[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"expected a JSON list in statistics, got {value!r:.200}")
    return value


def _int(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer in statistics, got {value!r:.200}")
    return value
