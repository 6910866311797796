"""Refitting ONNX Runtime engines: the stored engine with new weights equals a build of them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from ort_models import source_of as plain_source

from kiln.compile.artifact import write_manifest
from kiln.compile.backends.base import EngineArtifact
from kiln.compile.backends.onnxruntime import OnnxRuntimeBackend
from kiln.compile.data import SampleSet
from kiln.compile.spec import BuildSpec
from kiln.errors import RefitUnsupported
from kiln.examples import make_model, make_samples
from kiln.examples.recipes import build_spec
from kiln.model.fingerprint import fingerprint
from kiln.model.source import ModelSource
from kiln.types import Array

EXAMPLES = ("ctr", "cnn", "ranker")


@pytest.fixture(scope="module")
def backend() -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend()


def source_of(model: onnx.ModelProto) -> ModelSource:
    """A ModelSource with kiln's real fingerprint (the structure hash ignores weight values)."""
    return replace(plain_source(model), fingerprint=fingerprint(model))


def retrained(model: onnx.ModelProto, seed: int = 7) -> onnx.ModelProto:
    """``model`` with every float weight moved a little, as a fine-tune does (same structure)."""
    rng = np.random.default_rng(seed)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for i, tensor in enumerate(copy.graph.initializer):
        value = numpy_helper.to_array(tensor)
        if value.dtype != np.float32 or value.ndim == 0:
            continue
        moved = (
            value * np.float32(0.97)
            + rng.normal(0, 0.01, value.shape).astype(np.float32) * np.abs(value).mean()
        )
        copy.graph.initializer[i].CopyFrom(numpy_helper.from_array(moved.astype(np.float32), tensor.name))
    return copy


def samples(name: str, count: int) -> dict[str, Array]:
    return {k: v for k, v in make_samples(name, count, size="tiny").items() if not k.startswith("_")}


def build(
    backend: OnnxRuntimeBackend, model: onnx.ModelProto, spec: BuildSpec, out: Path, table: Path | None = None
) -> EngineArtifact:
    source = source_of(model)
    calibration = None if table is not None or spec.precision != "int8" else SampleSet(CALIBRATION[0])
    output = backend.build(source, spec, out, calibration=calibration, calibration_cache=table)
    return write_manifest(
        out, key="k", source=source, spec=spec, target=backend.target(), output=output, build_seconds=0.0
    )


CALIBRATION: list[dict[str, Array]] = [{}]


def run(path: Path, feeds: dict[str, Array]) -> Array:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feeds)[0], dtype=np.float64)


def setup_example(name: str, precision: str) -> tuple[onnx.ModelProto, BuildSpec, dict[str, Array]]:
    spec = build_spec(name, precision, size="tiny")  # type: ignore[arg-type]
    CALIBRATION[0] = samples(name, 64)
    return make_model(name, size="tiny"), spec, samples(name, 16)


@pytest.mark.parametrize("name", EXAMPLES)
def test_fp32_refit_equals_a_build_of_the_new_weights(
    backend: OnnxRuntimeBackend, tmp_path: Path, name: str
) -> None:
    model, spec, feeds = setup_example(name, "fp32")
    base = build(backend, model, spec, tmp_path / "base")
    assert base.manifest.extra["refit"]["refittable"] is True  # type: ignore[index]
    new = retrained(model)
    output = backend.refit(base, source_of(new), tmp_path / "refit")
    full = build(backend, new, spec, tmp_path / "full")
    assert output.build_path == "refit"
    assert output.extra["refit_reproduces"] is None  # no calibration to reuse
    refitted = run(tmp_path / "refit" / "engine.onnx", feeds)
    np.testing.assert_allclose(refitted, run(full.engine_path, feeds), rtol=1e-4, atol=1e-5)
    assert not np.allclose(refitted, run(base.engine_path, feeds), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", EXAMPLES)
def test_int8_refit_is_as_accurate_as_a_rebuild_with_the_stored_calibration(
    backend: OnnxRuntimeBackend, tmp_path: Path, name: str
) -> None:
    model, spec, feeds = setup_example(name, "int8")
    base = build(backend, model, spec, tmp_path / "base")
    counts = base.manifest.extra["refit"]["counts"]  # type: ignore[index]
    assert counts["requantized"] > 0  # type: ignore[index]
    new = retrained(model)
    output = backend.refit(base, source_of(new), tmp_path / "refit")
    full = build(backend, new, spec, tmp_path / "full", table=base.path / "calibration.json")
    truth = run_reference(new, feeds)
    refit_error = np.linalg.norm(run(tmp_path / "refit" / "engine.onnx", feeds) - truth)
    full_error = np.linalg.norm(run(full.engine_path, feeds) - truth)
    assert refit_error <= 1.5 * full_error + 1e-3 * np.linalg.norm(truth)
    assert isinstance(output.extra["refit_clipped_values"], int)
    assert sorted(output.files) == ["calibration.json", "engine.onnx"]


def scaled(model: onnx.ModelProto, factor: float) -> onnx.ModelProto:
    """``model`` with every float weight of more than one element multiplied by ``factor``."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for i, tensor in enumerate(copy.graph.initializer):
        value = numpy_helper.to_array(tensor)
        if value.dtype == np.float32 and value.size > 1:
            moved = numpy_helper.from_array(value * np.float32(factor), tensor.name)
            copy.graph.initializer[i].CopyFrom(moved)
    return copy


@pytest.mark.parametrize("name", EXAMPLES)
def test_int8_refit_recomputes_the_weight_scales_as_a_rebuild_does(
    backend: OnnxRuntimeBackend, tmp_path: Path, name: str
) -> None:
    model, spec, feeds = setup_example(name, "int8")
    base = build(backend, model, spec, tmp_path / "base")
    scales = base.manifest.extra["refit"]["scales"]  # type: ignore[index]
    assert scales["recomputed"] > 0
    assert scales["kept"] == {}
    new = retrained(scaled(model, 3.0))  # weights three times as large: stale scales would clip
    output = backend.refit(base, source_of(new), tmp_path / "refit")
    assert output.extra["refit_clipped_values"] == 0
    assert output.extra["refit_reproduces"] == "calibration-reuse"
    rebuilt = build(backend, new, spec, tmp_path / "full", table=base.path / "calibration.json")
    engine = onnx.load(str(tmp_path / "refit" / "engine.onnx"))
    rebuilt_engine = onnx.load(str(rebuilt.engine_path))
    held = {t.name: numpy_helper.to_array(t) for t in rebuilt_engine.graph.initializer}
    entries = base.manifest.extra["refit"]["entries"]  # type: ignore[index]
    recomputed = {n for n, e in entries.items() if e["kind"] in ("requantized", "scale")}  # type: ignore[index]
    assert recomputed <= set(held)  # (the ranker's rebuild names some merged constants differently)
    for tensor in engine.graph.initializer:  # the very weights, scales and biases of the rebuild
        if tensor.name in held:
            np.testing.assert_array_equal(
                numpy_helper.to_array(tensor), held[tensor.name], err_msg=tensor.name
            )
    refitted = run(tmp_path / "refit" / "engine.onnx", feeds)
    truth = run_reference(new, feeds)
    refit_error = np.linalg.norm(refitted - truth)
    assert refit_error <= 1.05 * np.linalg.norm(run(rebuilt.engine_path, feeds) - truth) + 1e-6


def run_reference(model: onnx.ModelProto, feeds: dict[str, Array]) -> Array:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feeds)[0], dtype=np.float64)


def test_the_cnn_relayout_is_recorded_as_an_index(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    model, spec, _ = setup_example("cnn", "fp32")
    base = build(backend, model, spec, tmp_path / "base")
    record = base.manifest.extra["refit"]
    assert record["index_file"] == "refit_index.npz"  # type: ignore[index]
    assert "refit_index.npz" in base.manifest.files


def test_a_refit_given_the_engine_bytes_does_not_read_the_engine_file(
    backend: OnnxRuntimeBackend, tmp_path: Path
) -> None:
    model, spec, feeds = setup_example("ctr", "int8")
    base = build(backend, model, spec, tmp_path / "base")
    data = base.engine_path.read_bytes()
    base.engine_path.unlink()
    new = retrained(model)
    backend.refit(replace(base, engine_bytes=data), source_of(new), tmp_path / "refit")
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "engine.onnx").write_bytes(data)
    for name in ("calibration.json",):
        (tmp_path / "again" / name).write_bytes((base.path / name).read_bytes())
    backend.refit(replace(base, path=tmp_path / "again"), source_of(new), tmp_path / "refit2")
    refitted = (tmp_path / "refit" / "engine.onnx").read_bytes()
    assert refitted == (tmp_path / "refit2" / "engine.onnx").read_bytes()
    assert not np.allclose(
        run(tmp_path / "refit" / "engine.onnx", feeds), run(tmp_path / "again" / "engine.onnx", feeds)
    )


def test_a_mismatched_map_falls_back_and_leaves_nothing(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    model, spec, _ = setup_example("ctr", "fp32")
    base = build(backend, model, spec, tmp_path / "base")
    record = dict(base.manifest.extra["refit"])  # type: ignore[call-overload]
    entries = dict(record["entries"])
    carried = next(n for n, e in entries.items() if e["kind"] == "carried")
    entries[carried] = {**entries[carried], "source": "no.such.weight"}
    broken = replace(
        base,
        manifest=replace(
            base.manifest, extra={**base.manifest.extra, "refit": {**record, "entries": entries}}
        ),
    )
    with pytest.raises(RefitUnsupported, match=carried):
        backend.refit(broken, source_of(retrained(model)), tmp_path / "refit")
    assert list((tmp_path / "refit").iterdir()) == []


def test_a_changed_constant_is_not_refitted(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    model, spec, _ = setup_example("ctr", "fp32")
    base = build(backend, model, spec, tmp_path / "base")
    record = base.manifest.extra["refit"]
    unchanged = record["unchanged"]  # type: ignore[index]
    assert unchanged
    name = sorted(unchanged)[0]
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    tensor = next(t for t in changed.graph.initializer if t.name == name)
    value = numpy_helper.to_array(tensor)
    tensor.CopyFrom(numpy_helper.from_array((value + 1).astype(value.dtype), name))
    with pytest.raises(RefitUnsupported, match="changed"):
        backend.refit(base, source_of(changed), tmp_path / "refit")
    assert list((tmp_path / "refit").iterdir()) == []


def test_a_record_saying_not_refittable_is_refused(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    model, spec, _ = setup_example("ctr", "fp32")
    base = build(backend, model, spec, tmp_path / "base")
    why = {"format": 1, "refittable": False, "reason": "probe changed the graph"}
    broken = replace(base, manifest=replace(base.manifest, extra={**base.manifest.extra, "refit": why}))
    with pytest.raises(RefitUnsupported, match="probe changed the graph"):
        backend.refit(broken, source_of(retrained(model)), tmp_path / "refit")


def test_external_data_engines_are_not_refittable(tmp_path: Path) -> None:
    backend = OnnxRuntimeBackend(inline_limit_bytes=0)
    model, spec, _ = setup_example("ctr", "fp32")
    base = build(backend, model, spec, tmp_path / "base")
    record = base.manifest.extra["refit"]
    assert record["refittable"] is False  # type: ignore[index]
    assert record["reason"] == "the engine keeps its weights in external data"  # type: ignore[index]


def test_fp16_weights_cast_back_by_the_optimizer_refit(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    model, spec, feeds = setup_example("ctr", "fp16")
    base = build(backend, model, spec, tmp_path / "base")
    entries = base.manifest.extra["refit"]["entries"]  # type: ignore[index]
    assert any(e.get("via") == "float16" for e in entries.values())  # type: ignore[union-attr]
    new = retrained(model)
    backend.refit(base, source_of(new), tmp_path / "refit")
    full = build(backend, new, spec, tmp_path / "full")
    refitted = run(tmp_path / "refit" / "engine.onnx", feeds)
    np.testing.assert_allclose(refitted, run(full.engine_path, feeds), rtol=1e-4, atol=1e-5)


def test_an_unmappable_engine_records_why(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    model, spec, _ = setup_example("cnn", "fp16")  # NCHWc re-layout of float16 weights cast back
    base = build(backend, model, spec, tmp_path / "base")
    record = base.manifest.extra["refit"]
    assert record["refittable"] is False  # type: ignore[index]
    with pytest.raises(RefitUnsupported, match="not refittable: engine initializer"):
        backend.refit(base, source_of(retrained(model)), tmp_path / "refit")
    assert list((tmp_path / "refit").iterdir()) == []
