from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from ort_models import (
    IR_VERSION,
    build_artifact,
    cnn,
    ctr,
    ctr_inputs,
    mlp,
    mlp_inputs,
    reference,
    source_of,
)

from kiln.compile.backends.base import MANIFEST_NAME, EngineArtifact, Manifest
from kiln.compile.backends.onnxruntime import OnnxRuntimeBackend
from kiln.compile.registry import create_backend
from kiln.compile.spec import BuildSpec
from kiln.errors import BuildError, CacheCorrupt, InvalidInput, RefitUnsupported
from kiln.types import ShapeProfile


@pytest.fixture(scope="module")
def backend() -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend()


def test_registry_creates_the_backend() -> None:
    created = create_backend("onnxruntime")
    assert isinstance(created, OnnxRuntimeBackend)
    assert created.name == "onnxruntime"
    assert created.available() is None


def test_target_describes_this_cpu(backend: OnnxRuntimeBackend) -> None:
    target = backend.target()
    assert target.backend == "onnxruntime"
    assert target.device_kind == "cpu"
    assert target.arch
    details = dict(target.details)
    assert {"cpu_flags", "machine", "ort_build"} <= set(details)


def test_core_count_does_not_change_the_cache_key() -> None:
    from dataclasses import replace

    from kiln.cache.key import engine_key
    from kiln.compile.backends.cpu import CpuInfo
    from kiln.compile.backends.onnxruntime_target import cpu_target
    from kiln.compile.spec import BuildSpec

    two = CpuInfo("Test CPU", "x86_64", frozenset({"avx2", "fma"}), num_logical=2)
    targets = [
        cpu_target(replace(two, num_logical=n), version="1.31.1", build_info="ORT Build Info: x")
        for n in (2, 64)
    ]
    assert targets[0] == targets[1]
    keys = {engine_key("ab" * 32, BuildSpec(), t) for t in targets}
    assert len(keys) == 1
    other_isa = cpu_target(replace(two, flags=frozenset()), version="1.31.1", build_info="x")
    assert engine_key("ab" * 32, BuildSpec(), other_isa) not in keys


@pytest.mark.parametrize("batch", [1, 7])
def test_fp32_build_load_run_matches_reference(
    backend: OnnxRuntimeBackend, tmp_path: Path, batch: int
) -> None:
    model = mlp()
    artifact = build_artifact(backend, model, tmp_path / "mlp")
    assert (tmp_path / "mlp" / "engine.onnx").is_file()
    assert (tmp_path / "mlp" / MANIFEST_NAME).is_file()
    assert sorted(artifact.manifest.files) == ["engine.onnx"]
    assert artifact.manifest.build_path == "build"
    engine = backend.load(EngineArtifact.read(tmp_path / "mlp"))
    feeds = mlp_inputs(batch)
    out = engine.create_instance().run(feeds)
    np.testing.assert_allclose(out["y"], reference(model, feeds)[0], rtol=0, atol=1e-5)
    assert out["y"].shape == (batch, 3)
    engine.close()


def test_conv_model_is_optimized_for_this_cpu(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    model = cnn()
    artifact = build_artifact(backend, model, tmp_path / "cnn")
    saved = onnx.load(str(artifact.engine_path))
    domains = {node.domain for node in saved.graph.node}
    if backend.target().arch not in ("sse2", "sse4", "avx"):
        assert "com.microsoft.nchwc" in domains  # the hardware-specific layout
    engine = backend.load(artifact)
    feeds = {"image": np.random.default_rng(3).standard_normal((4, 3, 8, 8)).astype(np.float32)}
    out = engine.create_instance().run(feeds)
    np.testing.assert_allclose(out["logits"], reference(model, feeds)[0], rtol=0, atol=1e-5)


def test_signature_comes_from_the_session(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    engine = backend.load(build_artifact(backend, ctr(), tmp_path / "ctr"))
    assert [(t.name, t.datatype, t.shape) for t in engine.inputs] == [
        ("dense", "FP32", (-1, 13)),
        ("ids", "INT64", (-1, 4)),
    ]
    assert [(t.name, t.datatype, t.shape) for t in engine.outputs] == [("prob", "FP32", (-1, 1))]
    assert engine.max_batch_size == 32
    assert engine.profiles == ()


def test_profile_is_enforced(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    spec = BuildSpec(
        profiles=(ShapeProfile("x", (1, 4), (4, 4), (8, 4)), ShapeProfile("bias", (1, 3), (4, 3), (8, 3))),
        max_batch_size=8,
    )
    engine = backend.load(build_artifact(backend, mlp(), tmp_path / "mlp", spec))
    assert set(engine.profiles) == set(spec.profiles)
    assert engine.max_batch_size == 8
    instance = engine.create_instance()
    assert instance.run(mlp_inputs(8))["y"].shape == (8, 3)
    with pytest.raises(InvalidInput, match=r"input 'x' shape \[9, 4\] is outside.*from \[1, 4\] to \[8, 4\]"):
        instance.run(mlp_inputs(9))


def test_wrong_dtype_and_names_are_invalid_input(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    instance = backend.load(build_artifact(backend, ctr(), tmp_path / "ctr")).create_instance()
    feeds = ctr_inputs(2)
    with pytest.raises(InvalidInput, match=r"input 'ids' has datatype INT32.*send INT64"):
        instance.run({**feeds, "ids": feeds["ids"].astype(np.int32)})
    with pytest.raises(InvalidInput, match=r"unknown input 'sparse'.*missing input 'ids'"):
        instance.run({"dense": feeds["dense"], "sparse": feeds["ids"]})


def test_artifact_for_another_target_is_refused(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    artifact = build_artifact(backend, mlp(), tmp_path / "mlp")
    other_arch = "avx2" if backend.target().arch != "avx2" else "amx"
    for field, value in (("arch", other_arch), ("backend_version", "0.1")):
        target = {**artifact.manifest.target, field: value}
        moved = EngineArtifact(artifact.path, replace(artifact.manifest, target=target))
        with pytest.raises(BuildError, match=rf"built for .*{value}.*differs in {field}.*rebuild"):
            backend.load(moved)


def test_artifact_of_another_backend_is_refused(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    artifact = build_artifact(backend, mlp(), tmp_path / "mlp")
    foreign = EngineArtifact(artifact.path, replace(artifact.manifest, backend="tensorrt"))
    with pytest.raises(BuildError, match="tensorrt"):
        backend.load(foreign)


def test_missing_or_corrupt_engine_file(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    artifact = build_artifact(backend, mlp(), tmp_path / "mlp")
    artifact.engine_path.write_bytes(b"not a model")
    with pytest.raises(CacheCorrupt, match="cannot load the engine file"):
        backend.load(artifact)
    artifact.engine_path.unlink()
    with pytest.raises(CacheCorrupt, match="engine file is missing"):
        backend.load(artifact)


def test_refit_of_another_structure_is_unsupported(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    artifact = build_artifact(backend, mlp(), tmp_path / "mlp")
    with pytest.raises(RefitUnsupported, match="structure"):
        backend.refit(artifact, source_of(ctr()), tmp_path / "refit")
    assert not (tmp_path / "refit").exists()


def test_external_data_path_for_large_weights(tmp_path: Path) -> None:
    backend = OnnxRuntimeBackend(inline_limit_bytes=0)  # treat every model as past the 2 GiB limit
    model = cnn()
    artifact = build_artifact(backend, model, tmp_path / "big")
    assert sorted(artifact.manifest.files) == ["engine.onnx", "engine.onnx.data"]
    assert artifact.manifest.extra["external_data"] is True
    assert sorted(p.name for p in (tmp_path / "big").iterdir()) == [
        "engine.onnx",
        "engine.onnx.data",
        MANIFEST_NAME,
    ]
    feeds = {"image": np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    out = backend.load(artifact).create_instance().run(feeds)
    np.testing.assert_allclose(out["logits"], reference(model, feeds)[0], rtol=0, atol=1e-5)
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in model.graph.initializer)  # untouched


def test_unloadable_model_is_a_build_error_and_leaves_nothing(
    backend: OnnxRuntimeBackend, tmp_path: Path
) -> None:
    model = mlp()
    model.graph.node.append(helper.make_node("Frobnicate", ["y"], ["w"], domain="com.example"))
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    model.ir_version = IR_VERSION
    with pytest.raises(BuildError, match=r"could not optimize the model.*Frobnicate"):
        backend.build(source_of(model), BuildSpec(), tmp_path / "bad")
    assert list((tmp_path / "bad").iterdir()) == []


def test_non_onnx_source_is_refused(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    source = replace(source_of(mlp()), format="pt2", model=None)
    with pytest.raises(BuildError, match=r"needs an ONNX model.*pt2"):
        backend.build(source, BuildSpec(), tmp_path / "out")


def test_build_refuses_a_folder_holding_an_engine(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    (tmp_path / "engine.onnx").write_bytes(b"old")
    with pytest.raises(BuildError, match="already holds engine files"):
        backend.build(source_of(mlp()), BuildSpec(), tmp_path)
    assert (tmp_path / "engine.onnx").read_bytes() == b"old"


def test_build_reports_progress_and_work_estimate(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    output = backend.build(
        source_of(mlp()), BuildSpec(), tmp_path, progress=lambda s, d, t: seen.append((s, d, t))
    )
    assert seen[0][1:] == (0, 1)
    assert seen[-1][1:] == (1, 1)
    assert "optimizing for cpu-" in seen[0][0]
    assert output.extra["macs_per_sample"] == 4 * 8 + 8 * 3
    assert output.calibration_file is None


def test_manifest_round_trips_through_json(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    artifact = build_artifact(backend, mlp(), tmp_path / "mlp")
    data = json.loads((tmp_path / "mlp" / MANIFEST_NAME).read_text())
    assert Manifest.from_json(data) == artifact.manifest
    assert data["target"]["arch"] == backend.target().arch
