"""The TensorRT backend. Its pure planning (options, profiles, target binding) is tested everywhere;
building and running engines needs the ``tensorrt`` package and a CUDA GPU and is skipped elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kiln.compile.backends.tensorrt import TensorRTBackend
from kiln.compile.backends.tensorrt_plan import (
    check_target,
    input_ranges,
    parse_options,
    timing_cache_name,
    trt_target,
)
from kiln.compile.registry import create_backend
from kiln.errors import BuildError
from kiln.types import ShapeProfile, TensorSpec


def test_options_defaults_and_limits() -> None:
    options = parse_options({})
    assert (options.profiles, options.refit, options.opt_level) == (1, True, 3)
    assert parse_options({"profiles": "4", "refit": "off"}).profiles == 4
    for bad in (
        {"profiles": "0"},
        {"opt_level": "9"},
        {"refit": "maybe"},
        {"profiles": "x"},
        {"colour": "red"},
    ):
        with pytest.raises(BuildError):
            parse_options(bad)


def test_profiles_come_from_the_spec_or_the_batch_axis() -> None:
    inputs = (TensorSpec("dense", "FP32", (-1, 13)), TensorSpec("ids", "INT64", (-1, -1)))
    given = (ShapeProfile("ids", (1, 16), (8, 64), (32, 128)),)
    ranges = input_ranges(inputs, given, max_batch_size=32)
    assert ranges["dense"] == ((1, 13), (32, 13), (32, 13))
    assert ranges["ids"] == ((1, 16), (8, 64), (32, 128))
    with pytest.raises(BuildError, match="varies past the batch axis"):
        input_ranges(inputs, (), max_batch_size=32)


def test_engine_is_bound_to_tensorrt_version_and_gpu() -> None:
    built = trt_target(version="10.13", device_name="H100", capability=(9, 0), cuda="13.0", driver="580")
    check_target(built, built)
    other = trt_target(version="11.1", device_name="H100", capability=(9, 0), cuda="13.0", driver="580")
    with pytest.raises(BuildError, match="differs in backend_version"):
        check_target(built, other)
    assert timing_cache_name(built) == "timing-trt10.13-sm90.cache"


def test_available_says_why_not_when_tensorrt_is_missing() -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        reason = create_backend("tensorrt").available()
        assert reason is not None
        assert "tensorrt is not installed" in reason
    else:
        pytest.skip("tensorrt is installed here; the message for a missing package is not shown")


def _needs_tensorrt() -> None:
    pytest.importorskip(
        "tensorrt", reason="the tensorrt package is not installed (NVIDIA's wheel, CUDA machines)"
    )
    torch = pytest.importorskip("torch", reason="the tensorrt backend uses torch for device buffers")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: torch.cuda.is_available() is False")


def test_fp16_build_load_run_and_refit(tmp_path: Path) -> None:
    _needs_tensorrt()
    import onnxruntime as ort

    from kiln.compile.artifact import write_manifest
    from kiln.compile.spec import BuildSpec
    from kiln.examples import build_model, make_samples
    from kiln.model.load import load_model

    backend = TensorRTBackend(timing_cache_dir=tmp_path / "timing")
    spec = BuildSpec(
        precision="fp16", max_batch_size=8, backend="tensorrt", backend_options=(("profiles", "2"),)
    )
    v1 = build_model("ctr", tmp_path / "v1.onnx", size="tiny", seed=0)
    v2 = build_model("ctr", tmp_path / "v2.onnx", size="tiny", seed=1)
    source1, source2 = load_model(v1), load_model(v2)
    output = backend.build(source1, spec, tmp_path / "e1")
    artifact = write_manifest(
        tmp_path / "e1",
        key="k",
        source=source1,
        spec=spec,
        target=backend.target(),
        output=output,
        build_seconds=0.0,
    )
    assert (tmp_path / "timing" / timing_cache_name(backend.target())).is_file()
    feed = {k: v for k, v in make_samples("ctr", 8, size="tiny").items() if not k.startswith("_")}
    engine = backend.load(artifact)
    first, second = engine.create_instance(), engine.create_instance()
    want = ort.InferenceSession(str(v1), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_allclose(first.run(feed)["prob"], want, rtol=2e-2, atol=2e-3)
    np.testing.assert_allclose(second.run(feed)["prob"], want, rtol=2e-2, atol=2e-3)
    refitted = backend.refit(artifact, source2, tmp_path / "e2")
    assert refitted.build_path == "refit"
    artifact2 = write_manifest(
        tmp_path / "e2",
        key="k",
        source=source2,
        spec=spec,
        target=backend.target(),
        output=refitted,
        build_seconds=0.0,
    )
    want2 = ort.InferenceSession(str(v2), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    got2 = backend.load(artifact2).create_instance().run(feed)["prob"]
    np.testing.assert_allclose(got2, want2, rtol=2e-2, atol=2e-3)
