"""Pure parts of the torch backend: options and buckets, target binding, sticky-error mapping."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="the torch backend needs torch (the `torch` extra)")

from kiln.compile.backends.base import Target
from kiln.compile.backends.torch import device_health
from kiln.compile.backends.torch.compiler import row_shapes
from kiln.compile.backends.torch.options import default_buckets, parse_options, pick_bucket
from kiln.compile.backends.torch.target import check_target, cuda_target
from kiln.errors import BuildError, EngineDead, EngineFailed
from kiln.types import ShapeProfile, TensorSpec


def test_default_buckets_are_powers_of_two_and_the_maximum() -> None:
    assert default_buckets(1) == (1,)
    assert default_buckets(8) == (1, 2, 4, 8)
    assert default_buckets(100) == (1, 2, 4, 8, 16, 32, 64, 100)


def test_options_parse_and_the_maximum_is_always_a_bucket() -> None:
    options = parse_options({"buckets": "8,1", "compile": "eager", "cuda_graphs": "off"}, 32)
    assert options.buckets == (1, 8, 32)
    assert options.compile == "eager"
    assert not options.cuda_graphs
    assert pick_bucket(5, options.buckets) == 8
    assert pick_bucket(33, options.buckets) is None


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"buckets": "0,4"}, "buckets"),
        ({"buckets": "a"}, "batch sizes"),
        ({"compile": "fast"}, "one of inductor"),
        ({"speed": "max"}, "unknown torch backend option"),
    ],
)
def test_bad_options_are_refused(options: dict[str, str], match: str) -> None:
    with pytest.raises(BuildError, match=match):
        parse_options(options, 16)


def test_shapes_past_the_batch_axis_must_be_fixed_by_a_profile() -> None:
    specs = (TensorSpec("ids", "INT64", (-1, -1)),)
    with pytest.raises(BuildError, match="varies in dimension 1"):
        row_shapes(specs, (), batchable=True)
    fixed = (ShapeProfile("ids", (1, 128), (8, 128), (32, 128)),)
    assert row_shapes(specs, fixed, batchable=True) == [(128,)]


def _gpu(driver: str = "580.1", name: str = "H100") -> Target:
    return cuda_target(
        torch_version="2.11", device_name=name, capability=(9, 0), driver=driver, cuda="13.0", details={}
    )


def test_engine_is_bound_to_gpu_driver_cuda_and_torch() -> None:
    check_target(_gpu(), _gpu())
    with pytest.raises(BuildError, match="differs in driver"):
        check_target(_gpu(), _gpu(driver="590.2"))
    with pytest.raises(BuildError, match="differs in device_name"):
        check_target(_gpu(), _gpu(name="A100"))
    assert _gpu().tag == "cuda-sm90"


def test_sticky_errors_poison_the_process_and_others_are_transient() -> None:
    try:
        transient = device_health.map_device_error(
            RuntimeError("CUDA out of memory. Tried to allocate"), "run"
        )
        assert isinstance(transient, EngineFailed)
        assert device_health.poisoned() is None
        sticky = device_health.map_device_error(
            RuntimeError("CUDA error: an illegal memory access was encountered"), "engine x"
        )
        assert isinstance(sticky, EngineDead)
        assert "illegal memory access" in str(device_health.poisoned())
        with pytest.raises(EngineDead, match="restart the process"):
            device_health.check_alive("engine y")
    finally:
        device_health.reset_for_tests()
    device_health.check_alive("engine y")
