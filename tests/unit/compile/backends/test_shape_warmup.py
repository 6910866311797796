"""Engines declare whether they prepare each input shape on first use (``prepares_per_shape``)."""

from __future__ import annotations

from pathlib import Path

from ort_models import build_artifact, ctr

from kiln.compile.backends.base import DeclaresShapeWarmup, prepares_per_shape
from kiln.compile.backends.onnxruntime import OnnxRuntimeBackend


class Declares:
    def __init__(self, value: bool) -> None:
        self.prepares_per_shape = value


class Silent:
    """An engine that says nothing about shapes."""


def test_a_declared_value_is_taken_as_given() -> None:
    assert isinstance(Declares(False), DeclaresShapeWarmup)
    assert prepares_per_shape(Declares(False)) is False
    assert prepares_per_shape(Declares(True)) is True


def test_an_engine_that_declares_nothing_is_treated_as_preparing_every_shape() -> None:
    assert not isinstance(Silent(), DeclaresShapeWarmup)
    assert prepares_per_shape(Silent()) is True


def test_onnxruntime_on_cpu_prepares_no_shape(tmp_path: Path) -> None:
    backend = OnnxRuntimeBackend()
    engine = backend.load(build_artifact(backend, ctr(), tmp_path / "ctr"))
    try:
        assert isinstance(engine, DeclaresShapeWarmup)
        assert prepares_per_shape(engine) is False
    finally:
        engine.close()
