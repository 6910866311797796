"""The torch backend on the CPU: conversion numerics on kiln's example models, build/load/refit,
the standby pool, buckets, the index guard, target binding and errors. Builds use ``compile=eager``
(fast on 2 cores); one test compiles with Inductor for real."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch", reason="the torch backend needs torch (the `torch` extra)")

from kiln.cache import EngineStore, obtain_engine  # noqa: E402
from kiln.compile.artifact import write_manifest  # noqa: E402
from kiln.compile.backends.base import MANIFEST_NAME, EngineArtifact  # noqa: E402
from kiln.compile.backends.torch import TorchBackend  # noqa: E402
from kiln.compile.backends.torch.onnx_module import ConvertOptions, convert_onnx  # noqa: E402
from kiln.compile.registry import create_backend  # noqa: E402
from kiln.compile.spec import BuildSpec  # noqa: E402
from kiln.errors import BuildError, CacheCorrupt, InvalidInput, RefitUnsupported  # noqa: E402
from kiln.examples import build_model, make_model, make_samples  # noqa: E402
from kiln.model.load import load_model  # noqa: E402
from kiln.model.source import ModelSource  # noqa: E402

EAGER = (("compile", "eager"), ("buckets", "1,4,8"))


def feeds(name: str, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    samples = make_samples(name, rows, size="tiny", seed=seed)
    return {k: v for k, v in samples.items() if not k.startswith("_")}


def ort_run(model: object, feed: dict[str, np.ndarray]) -> np.ndarray:
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else Path(str(model)).read_bytes()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feed)[0]


def rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def spec(precision: str = "fp32", options: tuple[tuple[str, str], ...] = EAGER) -> BuildSpec:
    return BuildSpec(precision=precision, max_batch_size=8, backend="torch", backend_options=options)  # type: ignore[arg-type]


def build(backend: TorchBackend, source: ModelSource, folder: Path, build_spec: BuildSpec) -> EngineArtifact:
    output = backend.build(source, build_spec, folder)
    return write_manifest(
        folder,
        key="test",
        source=source,
        spec=build_spec,
        target=backend.target(),
        output=output,
        build_seconds=0.0,
    )


@pytest.mark.parametrize("name", ["ctr", "cnn", "ranker"])
def test_example_models_convert_to_onnxruntime_numerics(name: str) -> None:
    model = make_model(name, size="tiny")
    feed = feeds(name, 6)
    want = ort_run(model, feed)
    module = convert_onnx(model)
    low = convert_onnx(model, ConvertOptions(float_dtype=torch.bfloat16))
    with torch.no_grad():
        got = module(*[torch.from_numpy(feed[n]) for n in module.input_names])[0].numpy()
        got_bf16 = low(*[torch.from_numpy(feed[n]) for n in low.input_names])[0].numpy()
    assert rel(got, want) < 1e-5
    assert got_bf16.dtype == np.float32
    assert rel(got_bf16, want) < 6e-2


def test_registry_gives_the_torch_backend_with_a_cpu_target_here() -> None:
    backend = create_backend("torch")
    assert isinstance(backend, TorchBackend)
    assert backend.available() is None
    if not torch.cuda.is_available():
        assert backend.target().device_kind == "cpu"
        assert backend.target().backend_version == torch.__version__


def test_build_load_run_pads_to_buckets_and_refuses_too_many_rows(tmp_path: Path) -> None:
    backend = TorchBackend(device="cpu")
    path = build_model("ctr", tmp_path / "ctr.onnx", size="tiny")
    artifact = build(backend, load_model(path), tmp_path / "e", spec())
    assert sorted(p.name for p in artifact.path.iterdir()) == [
        "compile_cache.bin",
        "graph.onnx",
        MANIFEST_NAME,
        "weights.pt",
    ]
    assert artifact.manifest.extra["options"]["buckets"] == [1, 4, 8]
    engine = backend.load(EngineArtifact.read(artifact.path))
    assert engine.prepares_per_shape  # one captured graph / compiled kernel set per bucket
    instance = engine.create_instance()
    for rows in (1, 3, 8):
        feed = feeds("ctr", rows, seed=rows)
        got = instance.run(feed)["prob"]
        assert got.shape == (rows, 1)
        np.testing.assert_allclose(got, ort_run(path, feed), rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidInput, match="at most 8 rows"):
        instance.run(feeds("ctr", 9))
    bad = feeds("ctr", 2)
    bad["sparse"][1, 3] = 10**9
    with pytest.raises(InvalidInput, match="out of range"):
        instance.run(bad)
    assert engine.memory_bytes() >= artifact.manifest.extra["weights_bytes"] * 0.9  # type: ignore[operator]
    instance.close()
    engine.close()


def test_graph_file_holds_no_weights(tmp_path: Path) -> None:
    backend = TorchBackend(device="cpu")
    path = build_model("cnn", tmp_path / "cnn.onnx", size="tiny")
    artifact = build(backend, load_model(path), tmp_path / "e", spec())
    assert (artifact.path / "graph.onnx").stat().st_size < path.stat().st_size / 10


def test_weight_refit_goes_through_the_standby_pool(tmp_path: Path) -> None:
    backend = TorchBackend(device="cpu")
    v1 = build_model("cnn", tmp_path / "v1.onnx", size="tiny", seed=0)
    v2 = build_model("cnn", tmp_path / "v2.onnx", size="tiny", seed=1)
    source1, source2 = load_model(v1), load_model(v2)
    artifact = build(backend, source1, tmp_path / "e1", spec("bf16"))
    engine = backend.load(artifact)
    assert engine.load_report["path"] == "standby-refit"  # the build's own module, kept
    instance = engine.create_instance()
    feed = feeds("cnn", 4)
    first = instance.run(feed)["logits"]
    instance.close()
    engine.close()
    output = backend.refit(artifact, source2, tmp_path / "e2")
    assert output.build_path == "refit"
    refitted = write_manifest(
        tmp_path / "e2",
        key="test",
        source=source2,
        spec=spec("bf16"),
        target=backend.target(),
        output=output,
        build_seconds=0.0,
    )
    engine2 = backend.load(refitted)
    assert engine2.load_report["path"] == "standby-refit"
    assert engine2.load_report["runners"] == 1  # the closed instance's runner, recycled
    second = engine2.create_instance().run(feed)["logits"]
    assert rel(second, ort_run(v2, feed)) < 6e-2
    assert rel(second, first) > 0.1


def test_refit_of_another_structure_is_refused(tmp_path: Path) -> None:
    backend = TorchBackend(device="cpu")
    artifact = build(
        backend, load_model(build_model("ctr", tmp_path / "c.onnx", size="tiny")), tmp_path / "e", spec()
    )
    other = load_model(build_model("cnn", tmp_path / "n.onnx", size="tiny"))
    with pytest.raises(RefitUnsupported, match="structure"):
        backend.refit(artifact, other, tmp_path / "r")
    assert not (tmp_path / "r" / "weights.pt").exists()


def test_without_standby_a_closed_engine_is_freed_and_load_compiles(tmp_path: Path) -> None:
    backend = TorchBackend(device="cpu", max_standby_per_key=0)
    artifact = build(
        backend, load_model(build_model("ctr", tmp_path / "c.onnx", size="tiny")), tmp_path / "e", spec()
    )
    engine = backend.load(artifact)
    assert engine.load_report["path"] == "compiled"
    engine.close()
    assert backend.standby.held_bytes() == 0


def test_an_engine_closed_with_an_open_instance_is_not_kept(tmp_path: Path) -> None:
    backend = TorchBackend(device="cpu")
    artifact = build(
        backend, load_model(build_model("ctr", tmp_path / "c.onnx", size="tiny")), tmp_path / "e", spec()
    )
    engine = backend.load(artifact)
    engine.create_instance()
    engine.close()
    assert backend.load(artifact).load_report["path"] == "compiled"


def test_int8_options_and_buckets_are_refused_with_the_fix(tmp_path: Path) -> None:
    backend = TorchBackend(device="cpu")
    source = load_model(build_model("ctr", tmp_path / "c.onnx", size="tiny"))
    with pytest.raises(BuildError, match="int8 with the tensorrt or onnxruntime"):
        backend.build(source, spec("int8"), tmp_path / "a")
    with pytest.raises(BuildError, match="unknown torch backend option"):
        backend.build(source, spec(options=(("colour", "blue"),)), tmp_path / "b")
    with pytest.raises(BuildError, match="buckets"):
        backend.build(source, spec(options=(("buckets", "1,99"),)), tmp_path / "c")
    for folder in ("a", "b", "c"):
        assert not (tmp_path / folder / "weights.pt").exists()


def test_load_refuses_another_target_other_backend_and_missing_files(tmp_path: Path) -> None:
    backend = TorchBackend(device="cpu")
    artifact = build(
        backend, load_model(build_model("ctr", tmp_path / "c.onnx", size="tiny")), tmp_path / "e", spec()
    )
    manifest = json.loads((artifact.path / MANIFEST_NAME).read_text())
    manifest["target"]["backend_version"] = "0.0.0"
    (artifact.path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BuildError, match=r"built for torch 0\.0\.0"):
        backend.load(EngineArtifact.read(artifact.path))
    manifest["backend"] = "onnxruntime"
    (artifact.path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(BuildError, match="built by backend 'onnxruntime'"):
        backend.load(EngineArtifact.read(artifact.path))
    fresh = build(backend, load_model(tmp_path / "c.onnx"), tmp_path / "f", spec())
    (fresh.path / "weights.pt").unlink()
    with pytest.raises(CacheCorrupt, match="missing"):
        backend.load(fresh)


def test_engine_cache_builds_hits_and_refits_with_the_torch_backend(tmp_path: Path) -> None:
    backend = TorchBackend(device="cpu")
    store = EngineStore(tmp_path / "cache")
    v1 = load_model(build_model("ctr", tmp_path / "v1.onnx", size="tiny", seed=0))
    v2 = load_model(build_model("ctr", tmp_path / "v2.onnx", size="tiny", seed=1))
    paths = [obtain_engine(s, spec(), backend, store).path for s in (v1, v1, v2)]
    assert paths == ["build", "hit", "refit"]


def test_inductor_compile_writes_artifacts_that_a_later_load_uses(tmp_path: Path) -> None:
    """A real ``torch.compile`` on the CPU (the slow test of this file)."""
    backend = TorchBackend(device="cpu", max_standby_per_key=0)
    path = build_model("ctr", tmp_path / "ctr.onnx", size="tiny")
    artifact = build(backend, load_model(path), tmp_path / "e", spec(options=(("buckets", "2"),)))
    assert artifact.manifest.extra["compile_cache_bytes"] > 0  # type: ignore[operator]
    engine = backend.load(artifact)
    assert engine.load_report["cache_entries_loaded"] > 0  # type: ignore[operator]
    feed = feeds("ctr", 2)
    got = engine.create_instance().run(feed)["prob"]
    np.testing.assert_allclose(got, ort_run(path, feed), rtol=1e-4, atol=1e-5)
