"""generate_all and the examples/generate.py command line."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest

from kiln import examples
from kiln.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_examples", ROOT / "examples" / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generate_all_writes_the_documented_layout(tmp_path: Path) -> None:
    result = examples.generate_all(tmp_path, size="tiny", seed=0)
    assert sorted(result) == sorted(examples.EXAMPLES)
    for name, item in result.items():
        spec = examples.EXAMPLES[name]
        assert item.model == tmp_path / name / "model.onnx"
        assert item.model.read_bytes() == examples.make_model(name, size="tiny").SerializeToString()
        for folder, count in (
            (item.calibration, spec.num_calibration),
            (item.validation, spec.num_validation),
        ):
            parts = sorted(folder.glob("part-*.npz"))
            assert parts
            total = sum(len(np.load(p)[spec.input_names[0]]) for p in parts)
            assert total == count
        labelled = "_label" in np.load(next(item.validation.glob("*.npz"))).files
        assert labelled == ("validation" in spec.labelled)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(examples.EXAMPLES)


def test_generate_all_checks_names_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown example model"):
        examples.generate_all(tmp_path, size="tiny", names=["ctr", "gpt"])
    assert list(tmp_path.iterdir()) == []


def test_the_command_line_generates_one_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = _script().main([str(tmp_path), "--size", "tiny", "--seed", "4", "--only", "ranker"])
    assert code == 0
    model = onnx.load(str(tmp_path / "ranker" / "model.onnx"))
    assert model.SerializeToString() == examples.make_model("ranker", size="tiny", seed=4).SerializeToString()
    assert "ranker" in capsys.readouterr().out


def test_the_command_line_reports_bad_input_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ctr" / "calibration").mkdir(parents=True)
    (tmp_path / "ctr" / "calibration" / "keep.txt").write_text("x")
    code = _script().main([str(tmp_path), "--size", "tiny", "--only", "ctr"])
    assert code == 2
    assert "keep.txt" in capsys.readouterr().err
    assert not (tmp_path / "ctr" / "model.onnx").exists()  # nothing written before the refusal
