from __future__ import annotations

from prometheus_client import CollectorRegistry

from kiln.train.metrics import LoopMetrics
from kiln.train.policy import GateDecision
from kiln.train.report import ExportRecord, TrainingRecord


def _record(version: str) -> ExportRecord:
    training = TrainingRecord(
        offset=40,
        num_samples=36,
        first_new_received_s=100.0,
        last_received_s=101.0,
        train_seconds=0.5,
        export_seconds=0.1,
        gate_seconds=0.2,
        candidate_auc=0.8,
        live_auc=0.7,
        published_at_s=103.0,
    )
    return ExportRecord(version, GateDecision(bool(version), "", 0.8, 0.7, 10), training)


def test_exports_become_step_durations_freshness_and_counts() -> None:
    registry = CollectorRegistry()
    metrics = LoopMetrics(registry)
    metrics.observe("ctr", _record("2"))
    metrics.observe("ctr", _record(""))
    value = registry.get_sample_value
    assert value("kiln_online_step_seconds_sum", {"model": "ctr", "step": "train"}) == 1.0
    assert value("kiln_online_freshness_seconds_sum", {"model": "ctr"}) == 3.0
    assert value("kiln_online_freshness_seconds_count", {"model": "ctr"}) == 1.0
    assert value("kiln_online_exports_total", {"model": "ctr", "outcome": "rejected"}) == 1.0
    assert value("kiln_online_feedback_offset", {"model": "ctr"}) == 40.0


def test_training_record_round_trips_with_nan() -> None:
    record = _record("2").training
    nan_auc = TrainingRecord.from_json(record.to_json().replace(b"0.8", b"null"))
    assert nan_auc.candidate_auc != nan_auc.candidate_auc
    assert TrainingRecord.from_json(record.to_json()) == record
