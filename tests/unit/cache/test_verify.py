"""AccuracyVerifier against a fake backend whose engine adds a known error to the fp32 model."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from kiln.cache.verify import BESIDE_REFERENCE, AccuracyVerifier, CheckSamples, screen_count
from kiln.compile.backends.base import BuildOutput, EngineArtifact, LoadOptions, Target
from kiln.compile.data import SampleSet
from kiln.compile.spec import BuildSpec
from kiln.errors import AccuracyError
from kiln.model.source import Fingerprint, ModelSource
from kiln.types import Array, ShapeProfile, Tensors, TensorSpec

TARGET = Target("fake", "1.0", "cpu", "Fake CPU", "avx2")
REFERENCE_PATIENCE_S = 30.0
"""How long the fake background reference waits for the engine to run (a bound on a failure only)."""


class FakeEngine:
    """Doubles its input (what the source model computes) and adds ``error``."""

    def __init__(self, error: float, seen: list[int]) -> None:
        self.error = error
        self.seen = seen
        self.closed = False

    def create_instance(self) -> FakeEngine:
        return self

    def run(self, inputs: Tensors) -> dict[str, Array]:
        x = np.asarray(inputs["x"])
        self.seen.append(len(x))
        return {"y": 2 * x + self.error}

    def close(self) -> None:
        self.closed = True


class FakeBackend:
    name = "fake"

    def __init__(self, error: float) -> None:
        self.error = error
        self.loaded: list[EngineArtifact] = []
        self.batches: list[int] = []
        self.options: list[LoadOptions | None] = []

    def target(self) -> Target:
        return TARGET

    def load(self, artifact: EngineArtifact, options: LoadOptions | None = None) -> FakeEngine:
        self.loaded.append(artifact)
        self.options.append(options)
        return FakeEngine(self.error, self.batches)


def doubling_source() -> ModelSource:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    spec = TensorSpec("x", "FP32", (-1, 2))
    return ModelSource(
        Path("double.onnx"),
        "onnx",
        Fingerprint("s" * 64, "w" * 64, (("", 17),), 8),
        (spec,),
        (TensorSpec("y", "FP32", (-1, 2)),),
        0,
        model,
    )


class Loads:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> SampleSet:
        self.count += 1
        x = np.linspace(1.0, 2.0, 200, dtype=np.float32).reshape(100, 2)
        return SampleSet({"x": x})


OUTPUT = BuildOutput("engine.bin", ("engine.bin",), "build", extra={"note": "kept"})


def test_reports_the_error_and_loads_samples_and_reference_once(tmp_path: Path) -> None:
    backend, loads = FakeBackend(error=0.03), Loads()
    spec = BuildSpec(max_batch_size=16, max_accuracy_drop=0.05)
    verifier = AccuracyVerifier(backend, doubling_source(), spec, CheckSamples(loads, "validation"))  # type: ignore[arg-type]
    assert loads.count == 0  # nothing is read until an engine is checked

    first = verifier(tmp_path, OUTPUT)
    second = verifier(tmp_path, OUTPUT)

    assert loads.count == 1
    assert first == second
    assert first["task"] == "none"
    assert first["metric"] == "relative L2 error"
    assert first["samples_from"] == "validation"
    assert first["max_accuracy_drop"] == 0.05
    assert first["num_samples"] == 100
    assert first["max_abs_error"] == pytest.approx(0.03, rel=1e-4)
    assert 0.0 < first["drop"] < 0.05  # type: ignore[operator]
    staged = backend.loaded[0]
    assert staged.path == tmp_path
    assert staged.manifest.engine_file == "engine.bin"
    assert staged.manifest.extra == {"note": "kept"}
    assert BuildSpec.from_json(staged.manifest.spec) == spec
    assert set(backend.batches) == {16, 4}  # 6 batches of 16, one of 4, per check


def test_a_drop_over_the_bound_raises_naming_metric_and_bound(tmp_path: Path) -> None:
    verifier = AccuracyVerifier(
        FakeBackend(error=1.0),  # type: ignore[arg-type]
        doubling_source(),
        BuildSpec(max_accuracy_drop=0.01),
        CheckSamples(Loads(), "calibration"),
    )
    with pytest.raises(AccuracyError, match=r"relative L2 error .* > max_accuracy_drop 0.01"):
        verifier(tmp_path, OUTPUT)


def test_check_batches_respect_the_profiles(tmp_path: Path) -> None:
    backend = FakeBackend(error=0.0)
    spec = BuildSpec(profiles=(ShapeProfile("x", (1, 2), (4, 2), (8, 2)),), max_batch_size=64)
    AccuracyVerifier(backend, doubling_source(), spec, CheckSamples(Loads(), "validation"))(tmp_path, OUTPUT)  # type: ignore[arg-type]
    assert max(backend.batches) == 8


def update_verifier(
    backend: FakeBackend, spec: BuildSpec, loads: Loads, asked: int | None = 32
) -> AccuracyVerifier:
    return AccuracyVerifier(
        backend,  # type: ignore[arg-type]
        doubling_source(),
        spec,
        CheckSamples(loads, "validation"),
        update_check_samples=asked,
    )


@pytest.mark.parametrize(
    ("total", "batch", "asked", "expected"),
    [
        (128, 32, None, 32),
        (512, 32, None, 128),
        (8192, 32, None, 2048),
        (20, 32, None, 20),
        (100, 16, 40, 48),
    ],
)
def test_an_update_is_screened_on_a_quarter_in_whole_batches(
    total: int, batch: int, asked: int | None, expected: int
) -> None:
    assert screen_count(total, batch, asked) == expected


def test_an_update_clearly_within_the_bound_is_decided_on_the_prefix(tmp_path: Path) -> None:
    backend, loads = FakeBackend(error=0.001), Loads()
    verifier = update_verifier(backend, BuildSpec(max_batch_size=16, max_accuracy_drop=0.05), loads)
    verifier.prefetch(update=True)  # the reference of the prefix starts in the background
    report = verifier.check_update(tmp_path, OUTPUT, {"rel_l2_error": 0.001})
    assert report["num_samples"] == 32
    assert sum(backend.batches) == 32
    assert loads.count == 1


def test_an_update_near_the_bound_is_decided_on_every_sample(tmp_path: Path) -> None:
    """The first samples (smallest outputs) see a relative error of 0.13, all of them 0.098: the
    prefix alone would refuse the engine, the full check accepts it."""
    backend = FakeBackend(error=0.3)
    spec = BuildSpec(max_batch_size=16, max_accuracy_drop=0.1)
    report = update_verifier(backend, spec, Loads()).check_update(tmp_path, OUTPUT, None)
    assert report["num_samples"] == 100
    assert 0.09 < report["drop"] < 0.1  # type: ignore[operator]
    assert sum(backend.batches) == 100  # the prefix, then the rest; none run twice
    with pytest.raises(AccuracyError, match="on 100 samples"):
        update_verifier(FakeBackend(error=0.4), spec, Loads()).check_update(tmp_path, OUTPUT, None)


def test_an_update_without_a_bound_reports_the_prefix(tmp_path: Path) -> None:
    backend = FakeBackend(error=0.5)
    report = update_verifier(backend, BuildSpec(max_batch_size=16), Loads()).check_update(
        tmp_path, OUTPUT, {"rel_l2_error": 1e-4}
    )
    assert report["num_samples"] == 32
    assert sum(backend.batches) == 32


def test_a_prefix_that_cannot_be_judged_alone_is_measured_in_full(tmp_path: Path) -> None:
    """AUC needs clicks and non-clicks; the first 32 samples hold no click."""

    def labelled() -> SampleSet:
        x = np.linspace(1.0, 2.0, 200, dtype=np.float32).reshape(100, 2)
        labels = np.where(np.arange(100) < 40, 0, np.arange(100) % 2)
        return SampleSet({"x": x}, labels=labels)

    backend = FakeBackend(error=0.01)
    verifier = AccuracyVerifier(
        backend,  # type: ignore[arg-type]
        doubling_source(),
        BuildSpec(max_batch_size=16, task="ctr"),
        CheckSamples(labelled, "validation"),
        update_check_samples=32,
    )
    report = verifier.check_update(tmp_path, OUTPUT, None)
    assert report["num_samples"] == 100
    assert report["auc_reference"] is not None


def test_the_engine_is_loaded_before_the_samples_are_read(tmp_path: Path) -> None:
    """Loading the engine does not wait for the samples (read meanwhile by the reference's thread)."""
    order: list[str] = []

    class Recording(FakeBackend):
        def load(self, artifact: EngineArtifact, options: LoadOptions | None = None) -> FakeEngine:
            order.append("engine loaded")
            return super().load(artifact, options)

    def loads() -> SampleSet:
        order.append("samples read")
        return Loads()()

    verifier = AccuracyVerifier(
        Recording(error=0.001),  # type: ignore[arg-type]
        doubling_source(),
        BuildSpec(max_batch_size=16),
        CheckSamples(loads, "validation"),
    )
    verifier.check_update(tmp_path, OUTPUT, None)
    assert order == ["engine loaded", "samples read"]


def test_the_engine_runs_while_the_background_reference_is_still_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prefetched reference cannot finish before the new engine has run on the samples: a
    verifier that waited for the reference first would leave it waiting (bounded here) and fail."""
    engine_ran = threading.Event()
    waited: list[bool] = []

    def reference(model: object, samples: SampleSet, **kwargs: object) -> dict[str, Array]:
        waited.append(engine_ran.wait(timeout=REFERENCE_PATIENCE_S))
        return {"y": 2 * np.asarray(samples.inputs["x"])}

    class Signalling(FakeEngine):
        def run(self, inputs: Tensors) -> dict[str, Array]:
            values = super().run(inputs)
            engine_ran.set()
            return values

    class Backend(FakeBackend):
        def load(self, artifact: EngineArtifact, options: LoadOptions | None = None) -> FakeEngine:
            super().load(artifact, options)
            return Signalling(self.error, self.batches)

    monkeypatch.setattr("kiln.cache.verify.reference_outputs", reference)
    backend = Backend(error=0.001)
    verifier = update_verifier(backend, BuildSpec(max_batch_size=16), Loads())
    verifier.prefetch(update=True)
    report = verifier.check_update(tmp_path, OUTPUT, None)
    assert waited == [True]  # the reference saw the engine's run while it was still running
    assert backend.options == [BESIDE_REFERENCE]  # sharing the CPUs with the reference
    assert report["num_samples"] == 32
    assert report["max_abs_error"] == pytest.approx(0.001, rel=1e-3)


def test_without_a_background_reference_the_engine_takes_the_cpus_the_backend_gives(
    tmp_path: Path,
) -> None:
    backend = FakeBackend(error=0.001)
    update_verifier(backend, BuildSpec(max_batch_size=16), Loads()).check_update(tmp_path, OUTPUT, None)
    assert backend.options == [None]


def test_the_rest_of_the_samples_is_referenced_beside_the_engine_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An update near its bound is checked on every sample: the reference of the samples after the
    prefix also starts in the background before the engine runs on them, and each part of the
    reference can only finish once the engine has run that far."""
    ran = threading.Condition()
    covered: list[int] = []
    finished_after_engine: list[bool] = []
    parts_started: list[int] = []  # per engine batch: how many reference parts had started

    def reference(model: object, samples: SampleSet, **kwargs: object) -> dict[str, Array]:
        with ran:
            end = sum(covered) + len(samples)
            covered.append(len(samples))
            ran.notify_all()
            finished_after_engine.append(
                ran.wait_for(lambda: sum(backend.batches) >= end, timeout=REFERENCE_PATIENCE_S)
            )
        return {"y": 2 * np.asarray(samples.inputs["x"])}

    class Notifying(FakeEngine):
        def run(self, inputs: Tensors) -> dict[str, Array]:
            with ran:
                # The reference part of these rows runs in a thread of its own: wait (bounded) for
                # it to start; a verifier that started it only after the engine would time out here.
                needed = 1 if sum(backend.batches) < 32 else 2
                ran.wait_for(lambda: len(covered) >= needed, timeout=REFERENCE_PATIENCE_S)
                parts_started.append(len(covered))
                values = super().run(inputs)
                ran.notify_all()
            return values

    class Backend(FakeBackend):
        def load(self, artifact: EngineArtifact, options: LoadOptions | None = None) -> FakeEngine:
            super().load(artifact, options)
            return Notifying(self.error, self.batches)

    backend = Backend(error=0.3)
    monkeypatch.setattr("kiln.cache.verify.reference_outputs", reference)
    spec = BuildSpec(max_batch_size=16, max_accuracy_drop=0.1)
    report = update_verifier(backend, spec, Loads()).check_update(tmp_path, OUTPUT, None)
    assert report["num_samples"] == 100
    assert covered == [32, 68]  # the prefix, then the rest; nothing twice
    assert finished_after_engine == [True, True]
    assert parts_started == [1, 1, 2, 2, 2, 2, 2]  # 2 batches of the prefix, 5 of the rest
