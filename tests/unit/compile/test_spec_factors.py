"""BuildSpec: what reaches the cache key, and the JSON round trip."""

from __future__ import annotations

from kiln.compile.spec import BuildSpec


def test_float_output_op_types_key_int8_engines_only() -> None:
    plain = BuildSpec(precision="int8")
    floats = plain.with_changes(float_output_op_types=("MatMul",))

    assert "float_output_op_types" not in plain.cache_factors()  # keys from before the field stay
    assert floats.cache_factors()["float_output_op_types"] == ["MatMul"]
    fp32 = BuildSpec(float_output_op_types=("MatMul",))
    assert fp32.cache_factors() == BuildSpec().cache_factors()


def test_specs_round_trip_through_json() -> None:
    spec = BuildSpec(
        precision="int8", keep_fp32_op_types=("Gather",), float_output_op_types=("MatMul", "Gemm")
    )
    assert BuildSpec.from_json(spec.to_json()) == spec.with_changes(float_output_op_types=("Gemm", "MatMul"))
    assert BuildSpec.from_json(BuildSpec().to_json()) == BuildSpec()
