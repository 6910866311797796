"""The torch backend on a real CUDA GPU: compiled engines with CUDA graphs per bucket, instances on
their own streams, refit into the standby engine, the index guard, memory accounting and budget,
and sticky CUDA errors. Skipped where torch sees no CUDA device."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch backend needs torch (the `torch` extra)")
if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU: torch.cuda.is_available() is False", allow_module_level=True)

import onnxruntime as ort  # noqa: E402

from kiln.compile.artifact import write_manifest  # noqa: E402
from kiln.compile.backends.base import EngineArtifact  # noqa: E402
from kiln.compile.backends.torch import TorchBackend  # noqa: E402
from kiln.compile.spec import BuildSpec  # noqa: E402
from kiln.errors import InvalidInput  # noqa: E402
from kiln.examples import build_model, make_samples  # noqa: E402
from kiln.model.load import load_model  # noqa: E402
from kiln.model.source import ModelSource  # noqa: E402

BUCKETS = "1,4,8"


def _build(
    backend: TorchBackend, source: ModelSource, folder: Path, precision: str = "fp32"
) -> EngineArtifact:
    spec = BuildSpec(
        precision=precision, max_batch_size=8, backend="torch", backend_options=(("buckets", BUCKETS),)
    )  # type: ignore[arg-type]
    output = backend.build(source, spec, folder)
    return write_manifest(
        folder,
        key="gpu-test",
        source=source,
        spec=spec,
        target=backend.target(),
        output=output,
        build_seconds=0.0,
    )


def _feeds(name: str, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    samples = make_samples(name, count, size="tiny", seed=seed)
    return {k: v for k, v in samples.items() if not k.startswith("_")}


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.fixture(scope="module")
def ctr(tmp_path_factory: pytest.TempPathFactory) -> tuple[TorchBackend, EngineArtifact, Path]:
    root = tmp_path_factory.mktemp("ctr")
    backend = TorchBackend()
    path = build_model("ctr", root / "ctr.onnx", size="tiny")
    source = load_model(path, op_support=backend.op_support())
    return backend, _build(backend, source, root / "engine"), path


def test_target_names_the_gpu_driver_and_versions() -> None:
    target = TorchBackend().target()
    details = dict(target.details)
    assert target.device_kind == "cuda"
    assert target.arch.startswith("sm")
    assert target.device_name == torch.cuda.get_device_name(0)
    assert details["cuda"] == torch.version.cuda
    assert details["driver"] != ""


def test_engine_matches_onnxruntime_with_padding_and_concurrent_instances(
    ctr: tuple[TorchBackend, EngineArtifact, Path],
) -> None:
    backend, artifact, path = ctr
    engine = backend.load(artifact)
    instances = [engine.create_instance() for _ in range(2)]
    feeds = [_feeds("ctr", rows, seed=rows) for rows in (3, 8, 1, 5)]
    results: dict[int, np.ndarray] = {}

    def work(index: int) -> None:
        for _ in range(20):
            for number, feed in enumerate(feeds):
                results[index * 10 + number] = instances[index].run(feed)["prob"]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for number, feed in enumerate(feeds):
        want = _ort(path, feed)
        for index in range(2):
            got = results[index * 10 + number]
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert engine.memory_bytes() > sum(i.runner.device_bytes for i in instances) > 0
    for instance in instances:
        instance.close()
    engine.close()


def test_out_of_range_id_is_refused_and_the_device_stays_usable(
    ctr: tuple[TorchBackend, EngineArtifact, Path],
) -> None:
    backend, artifact, path = ctr
    engine = backend.load(artifact)
    instance = engine.create_instance()
    feed = _feeds("ctr", 4)
    bad = {**feed, "sparse": feed["sparse"].copy()}
    bad["sparse"][2, 5] = 10**9
    with pytest.raises(InvalidInput, match="out of range"):
        instance.run(bad)
    np.testing.assert_allclose(instance.run(feed)["prob"], _ort(path, feed), rtol=1e-4, atol=1e-5)
    instance.close()
    engine.close()


def test_weight_refit_goes_into_the_standby_engine_without_compiling(tmp_path: Path) -> None:
    backend = TorchBackend()
    v1 = build_model("cnn", tmp_path / "v1.onnx", size="tiny", seed=0)
    v2 = build_model("cnn", tmp_path / "v2.onnx", size="tiny", seed=1)
    source1 = load_model(v1, op_support=backend.op_support())
    artifact = _build(backend, source1, tmp_path / "e1", precision="fp16")
    engine = backend.load(artifact)
    instance = engine.create_instance()
    feed = _feeds("cnn", 8)
    first = instance.run(feed)["logits"]
    instance.close()
    engine.close()
    source2 = load_model(v2, op_support=backend.op_support())
    assert source2.fingerprint.structure_hash == source1.fingerprint.structure_hash
    output = backend.refit(artifact, source2, tmp_path / "e2")
    assert output.build_path == "refit"
    spec2 = BuildSpec.from_json(artifact.manifest.spec)
    refitted = write_manifest(
        tmp_path / "e2",
        key="gpu-test",
        source=source2,
        spec=spec2,
        target=backend.target(),
        output=output,
        build_seconds=0.0,
    )
    engine2 = backend.load(refitted)
    assert engine2.load_report["path"] == "standby-refit"
    instance2 = engine2.create_instance()
    second = instance2.run(feed)["logits"]
    want = _ort(v2, feed)
    assert np.linalg.norm(second - want) / np.linalg.norm(want) < 2e-2
    assert np.linalg.norm(second - first) / np.linalg.norm(first) > 0.1
    instance2.close()
    engine2.close()


def test_memory_budget_refuses_a_version_with_a_clear_reason(
    ctr: tuple[TorchBackend, EngineArtifact, Path],
) -> None:
    from kiln.runtime import BatchingConfig, ModelConfig, ModelSlot, VersionState

    backend, artifact, _ = ctr

    async def main() -> tuple[VersionState, str]:
        config = ModelConfig(
            batching=BatchingConfig(max_batch_size=8, preferred_batch_sizes=(4, 8)), max_memory_bytes=4096
        )
        slot = ModelSlot("ctr", config)
        status = await slot.load_version("1", lambda: backend.load(artifact)).wait(timeout_s=120)
        await slot.aclose()
        return status.state, status.reason or ""

    state, reason = asyncio.run(main())
    assert state is VersionState.FAILED
    assert "memory budget exceeded" in reason
    assert "max_memory_bytes=4096" in reason


_STICKY = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    from kiln.compile.artifact import write_manifest
    from kiln.compile.backends.torch import TorchBackend
    from kiln.compile.backends.torch.device_health import poisoned
    from kiln.compile.spec import BuildSpec
    from kiln.errors import EngineDead
    from kiln.examples import build_model, make_samples
    from kiln.model.load import load_model

    folder = Path(sys.argv[1])
    backend = TorchBackend()
    source = load_model(build_model("ctr", folder / "m.onnx", size="tiny"))
    options = (("buckets", "4"), ("compile", "eager"))
    spec = BuildSpec(max_batch_size=4, backend="torch", backend_options=options)
    output = backend.build(source, spec, folder / "e")
    artifact = write_manifest(
        folder / "e", key="k", source=source, spec=spec, target=backend.target(), output=output,
        build_seconds=0,
    )
    instance = backend.load(artifact).create_instance()
    feed = {k: v for k, v in make_samples("ctr", 4, size="tiny").items() if not k.startswith("_")}
    instance.run(feed)
    bad = torch.zeros(4, device="cuda")[torch.tensor([100], device="cuda")]  # device-side assert
    try:
        instance.run(feed)
    except EngineDead as error:
        print("FIRST", type(error).__name__, "poisoned" if poisoned() else "healthy")
    try:
        instance.run(feed)
    except EngineDead as error:
        print("SECOND", type(error).__name__)
    """
)


def test_sticky_cuda_error_poisons_the_process(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _STICKY, str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert "FIRST EngineDead poisoned" in done.stdout, done.stdout + done.stderr[-2000:]
    assert "SECOND EngineDead" in done.stdout
