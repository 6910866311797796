"""Request payloads from a signature (random, finite, in range) and from sample files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kiln.bench.inputs import RequestPool, parse_int_range
from kiln.errors import ConfigError
from kiln.types import TensorSpec

SPECS = (
    TensorSpec("dense", "FP32", (-1, 13)),
    TensorSpec("sparse", "INT64", (-1, 26)),
    TensorSpec("seq", "INT32", (-1, -1)),
    TensorSpec("flag", "BOOL", (-1,)),
    TensorSpec("half", "FP16", (-1, 2)),
)


def test_random_payloads_fit_the_signature() -> None:
    pool = RequestPool.random(SPECS, batch_size=3, count=5, seed=1, int_range=(10, 20), free_dim=7)
    assert len(pool) == 5
    assert pool[7] is pool[2]  # requests cycle through the payloads
    for payload in pool.payloads:
        assert payload["dense"].shape == (3, 13)
        assert payload["dense"].dtype == np.float32
        assert np.all(np.isfinite(payload["dense"]))
        assert payload["sparse"].dtype == np.int64
        assert payload["sparse"].min() >= 10
        assert payload["sparse"].max() < 20
        assert payload["seq"].shape == (3, 7)
        assert payload["seq"].dtype == np.int32
        assert payload["flag"].dtype == np.bool_
        assert payload["half"].dtype == np.float16
    again = RequestPool.random(SPECS, batch_size=3, count=5, seed=1, int_range=(10, 20), free_dim=7)
    assert np.array_equal(again[0]["dense"], pool[0]["dense"])


def test_an_int_range_outside_the_datatype_is_refused() -> None:
    with pytest.raises(ConfigError, match="holds no UINT8 value"):
        RequestPool.random((TensorSpec("u", "UINT8", (-1,)),), int_range=(300, 400))


def test_bytes_inputs_need_samples() -> None:
    with pytest.raises(ConfigError, match="BYTES"):
        RequestPool.random((TensorSpec("s", "BYTES", (-1,)),))


def test_payloads_from_an_npz_file(tmp_path: Path) -> None:
    specs = SPECS[:2]
    path = tmp_path / "data.npz"
    dense = np.arange(10 * 13, dtype=np.float32).reshape(10, 13)
    np.savez(path, dense=dense, sparse=np.ones((10, 26), np.int64))
    pool = RequestPool.from_samples(path, specs, batch_size=4)
    assert len(pool) == 2  # 10 rows make two whole requests of 4
    assert np.array_equal(pool[1]["dense"], dense[4:8])


def test_samples_that_do_not_fit_are_refused_naming_the_input(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, dense=np.zeros((4, 13), np.float64), sparse=np.ones((4, 26), np.int64))
    with pytest.raises(ConfigError, match="'dense' is FP64, the model wants FP32"):
        RequestPool.from_samples(path, SPECS[:2])
    np.savez(path, dense=np.zeros((2, 13), np.float32), sparse=np.ones((2, 26), np.int64))
    with pytest.raises(ConfigError, match="fewer than one request of 4"):
        RequestPool.from_samples(path, SPECS[:2], batch_size=4)


@pytest.mark.parametrize(("text", "want"), [("0:1000", (0, 1000)), ("-5:5", (-5, 5))])
def test_parse_int_range(text: str, want: tuple[int, int]) -> None:
    assert parse_int_range(text) == want


@pytest.mark.parametrize("text", ["5", "a:b", "5:5", "9:1"])
def test_parse_int_range_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="range"):
        parse_int_range(text)
