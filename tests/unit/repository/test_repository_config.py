"""config.yaml: parsing, every rejected key and value, defaults, and the pure conversions."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.errors import ConfigError
from kiln.repository.config import DEFAULT_CONFIG, allowed_keys, config_fields, parse_model_config
from kiln.repository.convert import (
    build_signature,
    build_spec,
    fallback_spec,
    load_options,
    runtime_config,
    sample_dirs,
)
from kiln.types import ShapeProfile

WHERE = "repo/ctr/config.yaml"

FULL = """
backend: onnxruntime
precision: int8
max_batch_size: 64
profiles:
  dense: {min: [1, 13], opt: [16, 13], max: [64, 13]}
calibration:
  samples_dir: calibration
  method: entropy
  num_samples: 512
  stratify_by: _key
  percentile: 99.99
  seed: 3
quantization:
  per_channel: true
  keep_fp32_nodes: [interact/dot]
  keep_fp32_op_types: [Gather]
  float_output_op_types: [MatMul]
accuracy:
  validation_dir: validation
  task: ctr
  max_accuracy_drop: 0.005
batching:
  max_queue_delay_us: 500
  preferred_batch_sizes: [8, 64]
  pad_to_preferred: false
  max_queue_size: 100
  dispatch_when_idle: false
  default_timeout_s: 2.5
instances: {count: 2, fallback_count: 3}
version_policy: {latest: 2, keep_loaded: 3, drain_timeout_s: 5}
fallback: {precision: fp32, backend: onnxruntime}
completeness: marker
"""


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_model_config(text, where=WHERE)


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return str(caught.value)


def test_no_file_and_an_empty_file_give_the_defaults() -> None:
    assert parse_model_config(None, where=WHERE) is DEFAULT_CONFIG
    assert parse("") is DEFAULT_CONFIG
    assert parse("# nothing yet\n") is DEFAULT_CONFIG
    assert (DEFAULT_CONFIG.precision, DEFAULT_CONFIG.backend, DEFAULT_CONFIG.max_batch_size) == (
        "fp32",
        "onnxruntime",
        32,
    )
    assert DEFAULT_CONFIG.fallback is None
    assert DEFAULT_CONFIG.completeness == "auto"


def test_every_field_is_read() -> None:
    config = parse(FULL)
    assert config.precision == "int8"
    assert config.max_batch_size == 64
    assert config.profiles["dense"].opt == (16, 13)
    assert config.calibration.method == "entropy"
    assert config.calibration.seed == 3
    assert config.quantization.float_output_op_types == ("MatMul",)
    assert config.accuracy.max_accuracy_drop == 0.005
    assert config.batching.default_timeout_s == 2.5
    assert not config.batching.pad_to_preferred
    assert not config.batching.dispatch_when_idle
    assert config.instances.fallback_count == 3
    assert config.version_policy.latest == 2
    assert config.version_policy.num_served == 2
    assert config.fallback is not None
    assert config.fallback.precision == "fp32"
    assert config.completeness == "marker"


@pytest.mark.parametrize(
    ("text", "key", "allowed"),
    [
        ("precison: int8", "'precison'", "did you mean 'precision'?"),
        ("calibration: {sample_dir: cal}", "'calibration.sample_dir'", "did you mean 'samples_dir'?"),
        ("quantization: {perchannel: true}", "'quantization.perchannel'", "per_channel"),
        ("accuracy: {bound: 0.1}", "'accuracy.bound'", "max_accuracy_drop"),
        ("batching: {max_delay_us: 5}", "'batching.max_delay_us'", "did you mean 'max_queue_delay_us'?"),
        ("instances: {kind: gpu}", "'instances.kind'", "count, fallback_count"),
        ("version_policy: {all: true}", "'version_policy.all'", "keep_loaded"),
        ("fallback: {device: cpu}", "'fallback.device'", "backend, precision"),
        ("profiles: {x: {min: [1], opt: [1], max: [1], mid: [1]}}", "'profiles.x.mid'", "max, min, opt"),
        ("dynamic_batching: {}", "'dynamic_batching'", "allowed here: accuracy, backend"),
    ],
)
def test_an_unknown_key_is_named_with_the_file_and_the_allowed_keys(
    text: str, key: str, allowed: str
) -> None:
    message = error_of(text)
    assert message.startswith(WHERE)
    assert f"unknown key {key}" in message
    assert allowed in message


def test_allowed_keys_walks_sections_and_profiles() -> None:
    assert "samples_dir" in allowed_keys(("calibration",))
    assert allowed_keys(("profiles", "dense")) == ["max", "min", "opt"]
    assert allowed_keys(("profiles",)) == []
    assert allowed_keys(("precision",)) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("precision: int4", "precision"),
        ("backend: openvino", "backend"),
        ("max_batch_size: 0", "max_batch_size"),
        ("max_batch_size: 100000", "max_batch_size"),
        ("calibration: {num_samples: 0}", "calibration.num_samples"),
        ("calibration: {method: kl}", "calibration.method"),
        ("calibration: {percentile: 10}", "calibration.percentile"),
        ("calibration: {samples_dir: ../elsewhere}", "must be a folder inside the model folder"),
        ("calibration: {samples_dir: /abs/path}", "must be a folder inside the model folder"),
        ("accuracy: {validation_dir: ../v}", "must be a folder inside the model folder"),
        ("accuracy: {task: regression}", "accuracy.task"),
        ("accuracy: {max_accuracy_drop: -1}", "accuracy.max_accuracy_drop"),
        ("batching: {max_queue_delay_us: -1}", "batching.max_queue_delay_us"),
        ("batching: {max_queue_size: 0}", "batching.max_queue_size"),
        ("batching: {default_timeout_s: 0}", "batching.default_timeout_s"),
        ("instances: {count: 0}", "instances.count"),
        ("instances: {count: 1000}", "instances.count"),
        ("version_policy: {latest: 0}", "version_policy.latest"),
        ("version_policy: {specific: []}", "version_policy.specific"),
        ("version_policy: {keep_loaded: 99}", "version_policy.keep_loaded"),
        ("version_policy: {warmup_batch_sizes: []}", "version_policy.warmup_batch_sizes"),
        ("version_policy: {warmup_batch_sizes: one}", "version_policy.warmup_batch_sizes"),
        ("completeness: sometimes", "completeness"),
        ("fallback: {precision: fp64}", "fallback.precision"),
    ],
)
def test_bad_values_name_the_key(text: str, expected: str) -> None:
    message = error_of(text)
    assert message.startswith(WHERE)
    assert expected in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_batch_size: 8\nbatching: {preferred_batch_sizes: [4, 16]}", "1..max_batch_size (8)"),
        (
            "max_batch_size: 8\nprofiles: {x: {min: [1], opt: [4], max: [16]}}",
            "allows batch 16, above max_batch_size 8",
        ),
        ("profiles: {x: {min: [4], opt: [2], max: [8]}}", "need 1 <= min <= opt <= max"),
        ("profiles: {x: {min: [1, 2], opt: [2], max: [8]}}", "same rank"),
        ("accuracy: {max_accuracy_drop: 0.1}", "needs samples to measure on"),
        ("version_policy: {latest: 2, specific: [1]}", "latest (2) or specific ([1]), not both"),
        ("version_policy: {specific: [0]}", "positive integers"),
        (
            "max_batch_size: 8\nversion_policy: {warmup_batch_sizes: [1, 16]}",
            "version_policy.warmup_batch_sizes [1, 16] must lie in 1..max_batch_size (8), seen [16]",
        ),
        (
            "version_policy: {warmup_batch_sizes: [0, 4]}",
            "version_policy.warmup_batch_sizes [0, 4] must lie in 1..max_batch_size (32), seen [0]",
        ),
        ("version_policy: {warmup_batch_sizes: [4, 4]}", "[4, 4] repeat a size"),
        ("fallback: {precision: fp32}", "is the primary engine again"),
    ],
)
def test_cross_field_checks_name_both_values(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_yaml_errors_and_non_mappings_name_the_file() -> None:
    assert error_of("precision: [int8").startswith(f"{WHERE} is not valid YAML")
    assert "must be a mapping of keys" in error_of("- precision\n- int8")


def test_int8_build_spec_follows_the_config() -> None:
    config = parse(FULL)
    spec = build_spec(config)
    assert spec.precision == "int8"
    assert spec.backend == "onnxruntime"
    assert spec.max_batch_size == 64
    assert spec.calibration is not None
    assert (spec.calibration.method, spec.calibration.num_samples, spec.calibration.stratify_by) == (
        "entropy",
        512,
        "_key",
    )
    assert spec.per_channel
    assert spec.keep_fp32_nodes == ("interact/dot",)
    assert spec.float_output_op_types == ("MatMul",)
    assert spec.profiles == (ShapeProfile("dense", (1, 13), (16, 13), (64, 13)),)
    assert (spec.task, spec.max_accuracy_drop) == ("ctr", 0.005)


def test_the_fallback_spec_is_the_primary_at_its_precision() -> None:
    config = parse(FULL)
    fallback = fallback_spec(config)
    assert fallback is not None
    assert fallback.precision == "fp32"
    assert fallback.calibration is None
    assert not fallback.per_channel
    assert fallback.profiles == build_spec(config).profiles
    assert fallback_spec(DEFAULT_CONFIG) is None


def test_fp32_specs_carry_no_int8_settings() -> None:
    spec = build_spec(parse("quantization: {per_channel: true, float_output_op_types: [MatMul]}"))
    assert spec.precision == "fp32"
    assert spec.calibration is None
    assert not spec.per_channel
    assert spec.float_output_op_types == ()


def test_runtime_config_follows_the_config() -> None:
    config = runtime_config(parse(FULL))
    assert config.num_instances == 2
    assert config.num_fallback_instances == 3
    batching = config.batching
    assert (batching.max_batch_size, batching.max_queue_delay_us, batching.preferred_batch_sizes) == (
        64,
        500,
        (8, 64),
    )
    assert (batching.max_queue_size, batching.default_timeout_s, batching.pad_to_preferred) == (
        100,
        2.5,
        False,
    )
    assert not batching.dispatch_when_idle
    assert runtime_config(DEFAULT_CONFIG).batching.dispatch_when_idle
    assert config.versions.max_loaded_versions == 3
    assert config.versions.drain_timeout_s == 5


def test_engines_are_loaded_knowing_how_many_instances_share_the_cpus() -> None:
    config = runtime_config(parse(FULL))  # instances: {count: 2, fallback_count: 3}
    primary = load_options(config, fallback=False)
    assert (primary.num_instances, primary.intra_op_threads) == (2, 0)
    assert load_options(config, fallback=True, intra_op_threads=4).num_instances == 3
    assert load_options(config, fallback=True, intra_op_threads=4).intra_op_threads == 4
    assert load_options(None, fallback=False).num_instances == 1


def test_warmup_batch_sizes_reach_the_runtime_and_default_to_the_engine_plan() -> None:
    assert runtime_config(DEFAULT_CONFIG).versions.warmup_batch_sizes is None
    config = runtime_config(parse("max_batch_size: 16\nversion_policy: {warmup_batch_sizes: [8, 1]}"))
    assert config.versions.warmup_batch_sizes == (1, 8)
    no_axis = runtime_config(parse("version_policy: {warmup_batch_sizes: [4]}"), batchable=False)
    assert (no_axis.batching.max_batch_size, no_axis.versions.warmup_batch_sizes) == (1, (1,))


def test_keep_loaded_defaults_to_the_versions_served() -> None:
    assert runtime_config(DEFAULT_CONFIG).versions.max_loaded_versions == 1
    assert runtime_config(parse("version_policy: {specific: [3, 5]}")).versions.max_loaded_versions == 2
    assert (
        runtime_config(parse("version_policy: {latest: 3, keep_loaded: 1}")).versions.max_loaded_versions == 3
    )


def test_a_model_without_a_batch_axis_is_served_one_request_per_run_unless_told() -> None:
    default = runtime_config(parse("batching: {preferred_batch_sizes: [4]}"), batchable=False)
    assert default.batching.max_batch_size == 1
    assert default.batching.preferred_batch_sizes == ()
    explicit = runtime_config(parse("max_batch_size: 8"), batchable=False)
    assert explicit.batching.max_batch_size == 8


def test_sample_folders_are_inside_the_model_folder_and_only_used_when_needed(tmp_path: Path) -> None:
    dirs = sample_dirs(parse(FULL), tmp_path)
    assert dirs.calibration == tmp_path / "calibration"
    assert dirs.validation == tmp_path / "validation"
    fp32 = sample_dirs(parse("calibration: {samples_dir: cal}"), tmp_path)
    assert fp32.calibration is None
    assert fp32.validation is None
    fallback_int8 = sample_dirs(
        parse("fallback: {precision: int8}\ncalibration: {samples_dir: cal}"), tmp_path
    )
    assert fallback_int8.calibration == tmp_path / "cal"


def test_the_build_signature_changes_with_build_settings_only() -> None:
    base = build_signature(parse("precision: fp32"))
    assert build_signature(parse("precision: fp32\nbatching: {max_queue_delay_us: 5}")) == base
    assert build_signature(parse("precision: fp32\ninstances: {count: 4}")) == base
    assert build_signature(parse("precision: fp16")) != base
    assert build_signature(parse("max_batch_size: 16")) != base
    assert build_signature(parse("accuracy: {validation_dir: v}")) != base


def test_every_config_field_is_documented() -> None:
    page = (Path(__file__).resolve().parents[3] / "docs" / "repository.md").read_text()
    missing = [key for key, _ in config_fields() if f"`{key}`" not in page]
    assert not missing, f"docs/repository.md does not document {missing}"
    assert all(description for _, description in config_fields())
