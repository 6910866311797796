"""obtain_engine with a fake backend: hit, refit, calibration reuse, recalibration, build, failures."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from cache_fakes import TARGET, FakeBackend, digest, flip_byte, make_source, temp_leftovers

from kiln._clock import FakeClock
from kiln.cache.builder import obtain_engine
from kiln.cache.key import engine_key
from kiln.cache.store import EngineStore
from kiln.compile.backends.base import MANIFEST_NAME, BuildOutput, EngineArtifact
from kiln.compile.spec import BuildSpec
from kiln.errors import AccuracyError, BuildError

FP32 = BuildSpec()
INT8 = BuildSpec(precision="int8", max_accuracy_drop=0.01)


@pytest.fixture
def store(tmp_path: Path) -> EngineStore:
    return EngineStore(tmp_path / "engines", wall_clock=FakeClock(start=1_700_000_000.0))


def drop_of(value: float) -> dict[str, object]:
    return {"task": "none", "drop": value}


def test_miss_builds_then_hits(store: EngineStore) -> None:
    backend = FakeBackend()
    first = obtain_engine(make_source(), FP32, backend, store)
    second = obtain_engine(make_source(), FP32, backend, store)
    assert (first.path, second.path) == ("build", "hit")
    assert backend.num_builds == 1
    assert second.artifact.path == first.artifact.path
    assert second.artifact.manifest == first.artifact.manifest
    assert first.key == engine_key(digest("net"), FP32, TARGET).hex
    assert first.weights_hash == digest("w1")
    assert first.target_tag == "cpu-avx2"
    assert first.engine_size_bytes == (first.artifact.path / "engine.bin").stat().st_size
    manifest = EngineArtifact.read(first.artifact.path).manifest
    assert manifest.build_path == "build"
    assert manifest.extra["model_name"] == "ctr"
    assert temp_leftovers(store.root) == []


def test_build_seconds_come_from_the_injected_clock(store: EngineStore) -> None:
    clock = FakeClock()
    backend = FakeBackend(clock=clock, build_cost_s=2.5)
    report = obtain_engine(make_source(), FP32, backend, store, clock=clock)
    assert report.build_seconds == pytest.approx(2.5)
    assert report.artifact.manifest.build_seconds == pytest.approx(2.5)
    assert report.wait_seconds == 0.0


def test_hit_bumps_last_used(store: EngineStore) -> None:
    backend = FakeBackend()
    obtain_engine(make_source(), FP32, backend, store)
    clock = FakeClock(start=1_800_000_000.0)
    later = EngineStore(store.root, wall_clock=clock)
    obtain_engine(make_source(), FP32, backend, later)
    assert later.list_entries()[0].last_used == clock.now()


def test_new_weights_are_refitted_and_both_entries_stay(store: EngineStore) -> None:
    backend = FakeBackend()
    base = obtain_engine(make_source("w1"), FP32, backend, store)
    report = obtain_engine(make_source("w2"), FP32, backend, store)
    assert report.path == "refit"
    assert report.key == base.key
    assert (backend.num_builds, backend.num_refits) == (1, 1)
    assert (report.artifact.path / "engine.bin").read_text() == f"refitted {digest('w2')}"
    assert len(store.entries(base.key)) == 2
    assert obtain_engine(make_source("w1"), FP32, backend, store).path == "hit"


def test_refit_unsupported_reuses_the_calibration_table(store: EngineStore) -> None:
    backend = FakeBackend(can_refit=False)
    base = obtain_engine(make_source("w1"), INT8, backend, store)
    report = obtain_engine(make_source("w2"), INT8, backend, store)
    assert report.path == "calibration-reuse"
    table = base.artifact.path / "calibration.json"
    assert backend.calls[-1] == ("build", table)
    assert (report.artifact.path / "calibration.json").read_text() == table.read_text()
    assert report.artifact.manifest.build_path == "calibration-reuse"


def test_refit_unsupported_without_a_table_builds(store: EngineStore) -> None:
    backend = FakeBackend(can_refit=False)
    obtain_engine(make_source("w1"), FP32, backend, store)
    report = obtain_engine(make_source("w2"), FP32, backend, store)
    assert report.path == "build"
    assert backend.calls[-1] == ("build", None)


def test_reused_calibration_failing_accuracy_recalibrates(store: EngineStore) -> None:
    def verify(folder: Path, output: BuildOutput) -> dict[str, object]:
        return drop_of(0.5 if output.extra.get("calibration_reused") else 0.001)

    backend = FakeBackend(can_refit=False)
    base = obtain_engine(make_source("w1"), INT8, backend, store, verify=verify)
    report = obtain_engine(make_source("w2"), INT8, backend, store, verify=verify)
    assert report.path == "recalibrate"
    assert report.accuracy == drop_of(0.001)
    table = base.artifact.path / "calibration.json"
    assert backend.calls == [("build", None), ("refit", None), ("build", table), ("build", None)]
    assert (report.artifact.path / "calibration.json").read_text() == f"ranges of {digest('net')[:8]}"
    assert temp_leftovers(store.root) == []


def test_refit_failing_accuracy_rebuilds(store: EngineStore) -> None:
    def verify(folder: Path, output: BuildOutput) -> dict[str, object]:
        return drop_of(0.5 if output.build_path == "refit" else 0.0)

    backend = FakeBackend()
    obtain_engine(make_source("w1"), INT8, backend, store, verify=verify)
    report = obtain_engine(make_source("w2"), INT8, backend, store, verify=verify)
    assert report.path == "calibration-reuse"
    assert (backend.num_refits, backend.num_builds) == (1, 2)


def test_accuracy_failure_stores_nothing(store: EngineStore) -> None:
    backend = FakeBackend()
    with pytest.raises(AccuracyError, match=r"0\.2"):
        obtain_engine(make_source(), INT8, backend, store, verify=lambda d, o: drop_of(0.2))
    assert store.list_entries() == []
    assert temp_leftovers(store.root) == []


def test_verifier_raising_stores_nothing(store: EngineStore) -> None:
    def verify(folder: Path, output: BuildOutput) -> dict[str, object]:
        assert (folder / output.engine_file).is_file()
        raise AccuracyError("top-1 agreement 0.80 below 0.99")

    with pytest.raises(AccuracyError, match="top-1"):
        obtain_engine(make_source(), INT8, FakeBackend(), store, verify=verify)
    assert store.list_entries() == []
    assert temp_leftovers(store.root) == []


def test_failing_build_leaves_no_entry_and_no_temp_folder(store: EngineStore) -> None:
    backend = FakeBackend(fail_build=True)
    with pytest.raises(BuildError, match="failed on purpose"):
        obtain_engine(make_source(), FP32, backend, store)
    assert store.list_entries() == []
    assert temp_leftovers(store.root) == []


def test_corrupt_entry_is_rebuilt_never_served(store: EngineStore) -> None:
    backend = FakeBackend()
    first = obtain_engine(make_source(), FP32, backend, store)
    flip_byte(first.artifact.path / "engine.bin")
    report = obtain_engine(make_source(), FP32, backend, store)
    assert report.path == "build"
    assert backend.num_builds == 2
    assert store.open(store.entries(report.key)[0]).manifest == report.artifact.manifest
    assert (report.artifact.path / "engine.bin").read_text() == f"engine {digest('w1')}"


def test_corrupt_refit_base_is_removed_and_a_full_build_runs(store: EngineStore) -> None:
    backend = FakeBackend()
    base = obtain_engine(make_source("w1"), FP32, backend, store)
    flip_byte(base.artifact.path / "engine.bin")
    report = obtain_engine(make_source("w2"), FP32, backend, store)
    assert report.path == "build"
    assert backend.num_refits == 0
    assert [e.weights_hash for e in store.entries(report.key)] == [digest("w2")]


def test_manifest_that_is_not_json_is_rebuilt(store: EngineStore) -> None:
    backend = FakeBackend()
    first = obtain_engine(make_source(), FP32, backend, store)
    (first.artifact.path / MANIFEST_NAME).write_text("not json at all")
    report = obtain_engine(make_source(), FP32, backend, store)
    assert report.path == "build"
    assert EngineArtifact.read(report.artifact.path).manifest.key == report.key


def test_hit_rechecks_stored_accuracy_against_a_stricter_bound(store: EngineStore) -> None:
    backend = FakeBackend()
    loose = INT8.with_changes(max_accuracy_drop=0.1)
    obtain_engine(make_source(), loose, backend, store, verify=lambda d, o: drop_of(0.05))
    with pytest.raises(AccuracyError, match=r"0\.05.*0\.01"):
        obtain_engine(make_source(), INT8, backend, store)
    assert obtain_engine(make_source(), loose, backend, store).path == "hit"


def test_hit_without_a_stored_report_is_verified_once_under_a_gate(store: EngineStore) -> None:
    backend = FakeBackend()
    obtain_engine(make_source(), INT8.with_changes(max_accuracy_drop=None), backend, store)
    calls: list[Path] = []

    def verify(folder: Path, output: BuildOutput) -> dict[str, object]:
        calls.append(folder)
        return drop_of(0.001)

    report = obtain_engine(make_source(), INT8, backend, store, verify=verify)
    assert (report.path, report.accuracy) == ("hit", drop_of(0.001))
    assert EngineArtifact.read(report.artifact.path).manifest.accuracy == drop_of(0.001)
    assert obtain_engine(make_source(), INT8, backend, store, verify=verify).path == "hit"
    assert calls == [report.artifact.path]
    store.open(store.entries(report.key)[0])


def test_entry_for_another_target_is_refused_naming_both(store: EngineStore) -> None:
    backend = FakeBackend()
    first = obtain_engine(make_source(), FP32, backend, store)
    path = first.artifact.path / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["target"] = dataclasses.replace(TARGET, device_kind="cuda", arch="sm90").to_json()
    path.write_text(json.dumps(data))
    with pytest.raises(BuildError, match=r"cuda-sm90.*cpu-avx2"):
        obtain_engine(make_source(), FP32, backend, store)
    assert backend.num_builds == 1


def test_progress_is_reported(store: EngineStore) -> None:
    seen: list[str] = []
    obtain_engine(make_source(), FP32, FakeBackend(), store, progress=lambda s, d, t: seen.append(s))
    assert seen == ["build: ctr", "fake build"]


def test_an_update_that_regresses_against_its_base_is_kept_with_a_warning(
    store: EngineStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a bound, tripled error is reported, not refused: the new weights may simply be
    harder to quantize."""

    def verify(folder: Path, output: BuildOutput) -> dict[str, object]:
        error = 0.3 if output.extra.get("calibration_reused") else 0.1
        return {"task": "none", "drop": error, "rel_l2_error": error}

    spec = dataclasses.replace(INT8, max_accuracy_drop=None)
    backend = FakeBackend(can_refit=False)
    obtain_engine(make_source("w1"), spec, backend, store, verify=verify)
    report = obtain_engine(make_source("w2"), spec, backend, store, verify=verify)
    assert report.path == "calibration-reuse"
    assert "over 2 x the previous engine's 0.1" in caplog.text


def test_a_refit_that_regresses_against_its_base_falls_back_even_without_a_bound(store: EngineStore) -> None:
    def verify(folder: Path, output: BuildOutput) -> dict[str, object]:
        error = 0.3 if output.build_path == "refit" else 0.1
        return {"task": "none", "drop": error, "rel_l2_error": error}

    spec = dataclasses.replace(INT8, max_accuracy_drop=None)
    backend = FakeBackend()
    obtain_engine(make_source("w1"), spec, backend, store, verify=verify)
    report = obtain_engine(make_source("w2"), spec, backend, store, verify=verify)
    assert report.path == "calibration-reuse"
    assert (backend.num_refits, backend.num_builds) == (1, 2)
    assert temp_leftovers(store.root) == []


def test_a_refit_a_calibration_reuse_would_reproduce_is_kept_with_a_warning(
    store: EngineStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Rebuilding would only make the same engine: it is judged as that rebuild would be."""

    def verify(folder: Path, output: BuildOutput) -> dict[str, object]:
        error = 0.3 if output.build_path == "refit" else 0.1
        return {"task": "none", "drop": error, "rel_l2_error": error}

    spec = dataclasses.replace(INT8, max_accuracy_drop=None)
    backend = FakeBackend(refit_reproduces=True)
    obtain_engine(make_source("w1"), spec, backend, store, verify=verify)
    report = obtain_engine(make_source("w2"), spec, backend, store, verify=verify)
    assert report.path == "refit"
    assert (backend.num_refits, backend.num_builds) == (1, 1)
    assert "over 2 x the previous engine's 0.1" in caplog.text


def test_a_reproducible_refit_failing_its_bound_recalibrates_at_once(store: EngineStore) -> None:
    def verify(folder: Path, output: BuildOutput) -> dict[str, object]:
        return drop_of(0.5 if output.build_path == "refit" else 0.001)

    backend = FakeBackend(refit_reproduces=True)
    obtain_engine(make_source("w1"), INT8, backend, store, verify=verify)
    report = obtain_engine(make_source("w2"), INT8, backend, store, verify=verify)
    assert report.path == "recalibrate"
    assert backend.calls == [("build", None), ("refit", None), ("build", None)]
    assert temp_leftovers(store.root) == []


class UpdateAwareVerifier:
    """Records which check each engine got: a weight-only update gets ``check_update``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def __call__(self, folder: Path, output: BuildOutput) -> dict[str, object]:
        self.calls.append(("full", output.build_path))
        return {"task": "none", "drop": 0.0, "rel_l2_error": 0.1}

    def check_update(self, folder: Path, output: BuildOutput, baseline: object) -> dict[str, object]:
        self.calls.append(("update", baseline))
        return {"task": "none", "drop": 0.0, "rel_l2_error": 0.15}


def test_a_weight_only_update_is_checked_against_its_base(store: EngineStore) -> None:
    verify = UpdateAwareVerifier()
    backend = FakeBackend(can_refit=False)
    obtain_engine(make_source("w1"), INT8, backend, store, verify=verify)
    report = obtain_engine(make_source("w2"), INT8, backend, store, verify=verify)
    assert report.path == "calibration-reuse"
    assert verify.calls == [("full", "build"), ("update", {"task": "none", "drop": 0.0, "rel_l2_error": 0.1})]
