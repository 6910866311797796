"""The loop's report from a hand-made run: counts, windows, swap windows, versions (pure)."""

from __future__ import annotations

import numpy as np

from kiln.online.report import render_markdown, summarize
from kiln.online.run import LoopConfig, LoopResult
from kiln.online.traffic import Answer

START = 1000.0


def _result() -> LoopResult:
    rng = np.random.default_rng(0)
    answers = []
    for i in range(400):
        sent = START + i * 0.05  # 20 s
        label = int(rng.random() < 0.5)
        version = "1" if sent < START + 8 else "2"
        slow = START + 7.5 <= sent <= START + 9.0  # the swap of version 2 at 8 s (check+build 0.5 s)
        score = label * 0.5 + rng.random() * 0.6 if version == "2" else rng.random()
        error = "ServerError: boom" if i == 399 else ""
        answers.append(
            Answer(0, i, sent, 0.030 if slow else 0.002, "" if error else version, score, label, error)
        )
    journal = [
        {"version": "1", "outcome": "serving", "build_path": "build", "build_seconds": 0.5,
         "ready_seconds": 0.6, "serving_at_s": START - 5},
        {"version": "2", "outcome": "serving", "build_path": "refit", "build_seconds": 0.1,
         "ready_seconds": 0.5, "serving_at_s": START + 8.0, "publish_to_serving_seconds": 0.4,
         "freshness_seconds": 2.5, "gate": {"candidate_auc": 0.8, "serving_auc": 0.7, "first_auc": 0.7}},
        {"version": "3", "outcome": "rejected", "gate": {"reason": "NaN", "candidate_auc": None}},
    ]  # fmt: skip
    return LoopResult(
        config=LoopConfig(duration_s=20.0, rate_per_s=20.0, drift_from=0.0, drift_to=0.5),
        started_s=START,
        ended_s=START + 20,
        answers=answers,
        dense=np.zeros((400, 13)),
        sparse=np.zeros((400, 26)),
        journal=journal,
        acked_events=399,
        feedback_errors=[],
        frozen_scores=rng.random(400),
    )


def test_summarize_counts_swaps_failures_and_swap_windows() -> None:
    report = summarize(_result())
    assert (report.requests, report.failed, report.swaps, report.rejected) == (400, 1, 1, 1)
    assert report.not_ready_answers == 0
    assert report.build_paths == {"refit": 1}
    assert [w.start_s for w in report.windows] == [0.0, 10.0]
    assert report.windows[0].swaps == ("2",)
    assert report.windows[1].failed == 1
    assert report.swap_p99_ms > 20 > report.steady_p99_ms
    assert report.publish_to_serving_max_s == 0.4
    assert report.freshness_p50_s == 2.5
    assert report.live_auc_after_drift > report.frozen_auc_after_drift  # version 2 ranks the clicks


def test_markdown_shows_the_headline_numbers() -> None:
    text = render_markdown(summarize(_result()), figure="report.png")
    assert "| failed requests | 1 |" in text
    assert "| versions swapped in under load | 1 |" in text
    assert "| 3 | rejected |" in text
