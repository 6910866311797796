"""kiln's calibration table file: exact round trip, atomic writes, clear errors on bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kiln.compile.precision import load_calibration_table, save_calibration_table
from kiln.compile.precision.table import TABLE_FORMAT, read_table
from kiln.errors import ConfigError


def test_round_trip_is_exact_in_float32(tmp_path: Path) -> None:
    table = {"x": (-3.1415927, 2.7182817), "h1": (0.0, 1e-7), "y": (-1e30, 5.0)}
    path = tmp_path / "cal" / "table.json"
    save_calibration_table(table, path, method="entropy")
    loaded = load_calibration_table(path)
    assert set(loaded) == set(table)
    for name, (low, high) in table.items():
        assert loaded[name] == (float(np.float32(low)), float(np.float32(high)))
    stored = read_table(path)
    assert stored.method == "entropy"
    assert json.loads(path.read_text())["format"] == TABLE_FORMAT
    assert sorted(p.name for p in path.parent.iterdir()) == ["table.json"]  # no temporary file left


def test_saving_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    table = {"b": (0.0, 1.5), "a": (-2.0, 2.0)}
    save_calibration_table(table, tmp_path / "one.json", method="minmax")
    save_calibration_table(dict(reversed(list(table.items()))), tmp_path / "two.json", method="minmax")
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not readable JSON"),
        ('{"format": "other", "version": 1, "ranges": {"x": [0, 1]}}', "not a kiln calibration table"),
        (f'{{"format": "{TABLE_FORMAT}", "version": 2, "ranges": {{"x": [0, 1]}}}}', "format version 2"),
        (f'{{"format": "{TABLE_FORMAT}", "version": 1, "ranges": [1, 2]}}', "no 'ranges' object"),
        (f'{{"format": "{TABLE_FORMAT}", "version": 1, "ranges": {{"x": [2, 1]}}}}', "tensor 'x'"),
        (f'{{"format": "{TABLE_FORMAT}", "version": 1, "ranges": {{"x": [0]}}}}', "tensor 'x'"),
        (f'{{"format": "{TABLE_FORMAT}", "version": 1, "ranges": {{"x": ["0", 1]}}}}', "tensor 'x'"),
    ],
)
def test_bad_tables_are_config_errors_naming_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "table.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_calibration_table(path)
    assert "calibrate again" in str(info.value)


def test_missing_table_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_calibration_table(tmp_path / "nope.json")
