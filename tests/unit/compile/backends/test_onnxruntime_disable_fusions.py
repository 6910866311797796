"""Build option ``disable_fusions``: the engine and the refit map's probe both leave the optimizers out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from ort_models import build_artifact, cnn, reference, source_of

from kiln.compile.backends.onnxruntime import OnnxRuntimeBackend
from kiln.compile.spec import BuildSpec
from kiln.errors import BuildError

WITHOUT_NCHWC = BuildSpec(backend_options=(("disable_fusions", "NchwcTransformer"),))


@pytest.fixture(scope="module")
def backend() -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend()


def test_a_disabled_optimizer_is_left_out_of_the_engine(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    if backend.target().arch in ("sse2", "sse4", "avx"):
        pytest.skip("ONNX Runtime uses the NCHWc layout from AVX2 on")
    model = cnn()
    default = build_artifact(backend, model, tmp_path / "default")
    plain = build_artifact(backend, model, tmp_path / "plain", WITHOUT_NCHWC)
    assert "com.microsoft.nchwc" in {n.domain for n in onnx.load(str(default.engine_path)).graph.node}
    assert "com.microsoft.nchwc" not in {n.domain for n in onnx.load(str(plain.engine_path)).graph.node}
    assert plain.manifest.extra["disabled_fusions"] == ["NchwcTransformer"]
    assert "disabled_fusions" not in default.manifest.extra
    feeds = {"image": np.random.default_rng(3).standard_normal((4, 3, 8, 8)).astype(np.float32)}
    out = backend.load(plain).create_instance().run(feeds)
    np.testing.assert_allclose(out["logits"], reference(model, feeds)[0], rtol=0, atol=1e-5)


def test_the_refit_probe_leaves_out_the_same_optimizers(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    """Were the probe optimized with NCHWc, its graph would differ from the engine's: not refittable."""
    plain = build_artifact(backend, cnn(), tmp_path / "plain", WITHOUT_NCHWC)
    record = plain.manifest.extra["refit"]
    assert record["refittable"] is True, record  # type: ignore[index]
    assert record.get("index_file") is None  # type: ignore[union-attr]  # no re-laid-out weights


def test_an_unknown_optimizer_fails_the_build_and_leaves_nothing(
    backend: OnnxRuntimeBackend, tmp_path: Path
) -> None:
    spec = BuildSpec(backend_options=(("disable_fusions", "NchwcTransformr"),))
    with pytest.raises(BuildError, match="NchwcTransformr"):
        backend.build(source_of(cnn()), spec, tmp_path / "out")
    assert not any((tmp_path / "out").glob("engine*"))
