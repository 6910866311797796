"""Statistics of several workers merged into one answer, as data (no sockets)."""

from __future__ import annotations

import copy

import pytest

from kiln.runtime import Duration, HistogramSnapshot, StatsSnapshot
from kiln.server.admin_calls import PeerReply
from kiln.server.model_info import JSON, model_statistics, statistics_response
from kiln.server.workers_stats import StatisticsReply, combine_replies, merge_entry, merge_statistics

EMPTY_HISTOGRAM = HistogramSnapshot((), (0,), 0.0, 0)


def snapshot(
    model: str,
    version: str,
    *,
    successes: int,
    ns: int,
    batches: dict[int, Duration] | None = None,
    last_ms: int = 0,
    fails: int = 0,
) -> StatsSnapshot:
    """One worker's statistics of one version: ``successes`` requests of one row each, ``ns`` each
    phase (distinct per phase, so that a sum taken from the wrong field shows)."""
    return StatsSnapshot(
        model=model,
        version=version,
        success=Duration(successes, ns),
        fail=Duration(fails, 7 * fails),
        queue=Duration(successes, ns // 10),
        compute_input=Duration(successes, ns // 100),
        compute_infer=Duration(successes, ns // 2),
        compute_output=Duration(successes, ns // 1000),
        inference_count=successes,
        execution_count=sum(d.count for d in (batches or {}).values()) or successes,
        last_inference_ms=last_ms,
        padding_rows=0,
        failures={},
        batch_sizes=batches or {1: Duration(successes, ns // 2)},
        counters={},
        request_latency=EMPTY_HISTOGRAM,
        queue_latency=EMPTY_HISTOGRAM,
        compute_latency=EMPTY_HISTOGRAM,
    )


def response(*snapshots: StatsSnapshot) -> JSON:
    return statistics_response(model_statistics(s) for s in snapshots)


def entries(merged: JSON) -> dict[tuple[str, str], JSON]:
    found = merged["model_stats"]
    assert isinstance(found, list)
    return {(e["name"], e["version"]): e for e in found}


def test_the_same_version_on_two_workers_is_summed_field_by_field() -> None:
    a = snapshot("ctr", "1", successes=3, ns=3000, last_ms=1_700_000_000_500, fails=1)
    b = snapshot("ctr", "1", successes=5, ns=10_000, last_ms=1_700_000_000_100)
    (merged,) = entries(merge_statistics([response(a), response(b)])).values()
    assert merged["inference_count"] == 8
    assert merged["execution_count"] == 8
    assert merged["last_inference"] == 1_700_000_000_500  # the later one, not a sum
    stats = merged["inference_stats"]
    assert stats["success"] == {"count": 8, "ns": 13_000}
    assert stats["fail"] == {"count": 1, "ns": 7}
    assert stats["queue"] == {"count": 8, "ns": 300 + 1000}
    assert stats["compute_input"] == {"count": 8, "ns": 30 + 100}
    assert stats["compute_infer"] == {"count": 8, "ns": 1500 + 5000}
    assert stats["compute_output"] == {"count": 8, "ns": 3 + 10}
    assert stats["cache_hit"] == {"count": 0, "ns": 0}
    assert list(merged) == list(model_statistics(a))  # the protocol's fields, in its order


def test_disjoint_models_are_all_kept_in_order_of_first_appearance() -> None:
    a = response(snapshot("ctr", "1", successes=2, ns=100))
    b = response(snapshot("pair", "4", successes=1, ns=50), snapshot("ctr", "1", successes=1, ns=10))
    merged = entries(merge_statistics([a, b]))
    assert list(merged) == [("ctr", "1"), ("pair", "4")]
    assert merged[("ctr", "1")]["inference_count"] == 3
    assert merged[("pair", "4")] == model_statistics(snapshot("pair", "4", successes=1, ns=50))


def test_versions_of_one_model_stay_apart() -> None:
    a = response(snapshot("ctr", "1", successes=2, ns=100), snapshot("ctr", "2", successes=7, ns=700))
    b = response(snapshot("ctr", "2", successes=1, ns=50))
    merged = entries(merge_statistics([a, b]))
    assert list(merged) == [("ctr", "1"), ("ctr", "2")]
    assert merged[("ctr", "1")]["inference_count"] == 2
    assert merged[("ctr", "2")]["inference_count"] == 8
    assert merged[("ctr", "2")]["inference_stats"]["success"] == {"count": 8, "ns": 750}


def test_batch_stats_are_summed_per_batch_size() -> None:
    a = snapshot("ctr", "1", successes=6, ns=600, batches={1: Duration(2, 20), 4: Duration(1, 40)})
    b = snapshot("ctr", "1", successes=9, ns=900, batches={4: Duration(2, 90), 8: Duration(1, 80)})
    (merged,) = entries(merge_statistics([response(a), response(b)])).values()
    batches = {batch["batch_size"]: batch for batch in merged["batch_stats"]}
    assert list(batches) == [1, 4, 8]
    assert batches[1]["compute_infer"] == {"count": 2, "ns": 20}
    assert batches[4]["compute_infer"] == {"count": 3, "ns": 130}
    assert batches[4]["compute_input"] == {"count": 3, "ns": 0}
    assert batches[8]["compute_output"] == {"count": 1, "ns": 0}
    assert merged["execution_count"] == 3 + 3


def test_empty_answers_merge_to_nothing_and_do_not_change_the_rest() -> None:
    assert merge_statistics([]) == {"model_stats": []}
    assert merge_statistics([{"model_stats": []}, {"model_stats": []}]) == {"model_stats": []}
    one = response(snapshot("ctr", "1", successes=2, ns=100, batches={2: Duration(1, 10)}))
    assert merge_statistics([{"model_stats": []}, one, {"model_stats": []}]) == one


def test_merging_changes_neither_input() -> None:
    a = response(snapshot("ctr", "1", successes=2, ns=100))
    b = response(snapshot("ctr", "1", successes=3, ns=100))
    before = copy.deepcopy((a, b))
    merge_statistics([a, b])
    (left,), (right,) = a["model_stats"], b["model_stats"]  # type: ignore[misc]
    merge_entry(left, right)
    assert (a, b) == before


def test_every_worker_that_answered_is_merged_and_the_others_are_named() -> None:
    own = response(snapshot("ctr", "1", successes=2, ns=100))
    replies = [
        PeerReply(0, 200, result=response(snapshot("ctr", "1", successes=5, ns=100))),
        PeerReply(2, None, "no reply within 2 s (the worker is busy or stuck)"),
        PeerReply(3, None, "connection refused (the worker is down or restarting)"),
    ]
    reply = combine_replies(own, 1, replies)
    assert entries(reply.body)[("ctr", "1")]["inference_count"] == 7
    assert reply.missing == (2, 3)
    assert reply.headers() == [("kiln-worker", "1"), ("kiln-workers-missing", "2,3")]
    assert reply.problems[0] == "worker 2: no reply within 2 s (the worker is busy or stuck)"


def test_a_version_asked_for_keeps_only_that_version_of_the_other_workers() -> None:
    own = response(snapshot("ctr", "2", successes=1, ns=10))
    theirs = response(snapshot("ctr", "1", successes=4, ns=40), snapshot("ctr", "2", successes=3, ns=30))
    reply = combine_replies(own, 0, [PeerReply(1, 200, result=theirs)], version="2")
    assert list(entries(reply.body)) == [("ctr", "2")]
    assert entries(reply.body)[("ctr", "2")]["inference_count"] == 4
    assert reply.headers() == [("kiln-worker", "0")]  # nobody missing: no such header


@pytest.mark.parametrize(
    "result",
    [
        None,
        ["not", "an", "object"],
        {"model_stats": {"ctr": 1}},
        {"model_stats": [{"name": "ctr"}]},
        {"model_stats": [{"name": "ctr", "version": "1", "inference_count": "3"}]},
        {"model_stats": [{"name": "ctr", "version": "1", "batch_stats": [{"batch_size": 1.5}]}]},
    ],
    ids=["none", "list", "stats-not-a-list", "no-version", "count-not-int", "batch-size-not-int"],
)
def test_a_reply_that_cannot_be_read_counts_as_missing_and_adds_nothing(result: object) -> None:
    own = response(snapshot("ctr", "1", successes=2, ns=100))
    reply = combine_replies(own, 0, [PeerReply(1, 200, result=result)])
    assert reply.body == own
    assert reply.missing == (1,)


def test_an_error_reply_counts_as_missing() -> None:
    own = response(snapshot("ctr", "1", successes=2, ns=100))
    reply = combine_replies(own, 0, [PeerReply(1, 500, "internal error")])
    assert (reply.body, reply.missing, reply.problems) == (own, (1,), ("worker 1: internal error",))


def test_a_single_process_says_nothing_about_workers() -> None:
    assert StatisticsReply({"model_stats": []}).headers() == []
