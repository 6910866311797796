from __future__ import annotations

import pytest

from kiln.cache.key import engine_key
from kiln.compile.backends.onnxruntime_options import KNOWN_OPTIMIZERS, parse_options
from kiln.compile.backends.onnxruntime_target import machine_target
from kiln.compile.spec import BuildSpec
from kiln.errors import BuildError


def test_no_options_disable_nothing() -> None:
    assert parse_options({}).disabled_fusions == ()


def test_fusions_are_sorted_and_distinct() -> None:
    parsed = parse_options({"disable_fusions": " SkipLayerNormFusion,BiasGeluFusion,SkipLayerNormFusion, "})
    assert parsed.disabled_fusions == ("BiasGeluFusion", "SkipLayerNormFusion")


def test_an_unknown_optimizer_name_is_refused_with_the_names_allowed() -> None:
    with pytest.raises(BuildError) as caught:
        parse_options({"disable_fusions": "SkipLayerNormFusion,SkipLayerNormFusio"})
    message = str(caught.value)
    assert "SkipLayerNormFusio'" in message
    assert "disable_fusions=SkipLayerNormFusion" in message
    assert "NchwcTransformer" in message


def test_an_unknown_option_is_refused() -> None:
    with pytest.raises(BuildError, match=r"unknown onnxruntime backend option.*disable_fusion'"):
        parse_options({"disable_fusion": "SkipLayerNormFusion"})


def test_known_names_include_the_ones_kiln_uses() -> None:
    assert {"SkipLayerNormFusion", "NchwcTransformer"} <= KNOWN_OPTIMIZERS


def test_disabled_fusions_are_part_of_the_cache_key() -> None:
    target = machine_target()
    plain = BuildSpec()
    without = BuildSpec(backend_options=(("disable_fusions", "SkipLayerNormFusion"),))
    assert engine_key("f" * 64, plain, target) != engine_key("f" * 64, without, target)


def test_the_int8_ranker_recipe_leaves_out_skip_layer_norm_fusion() -> None:
    from kiln.examples.recipes import build_spec

    spec = build_spec("ranker", "int8", size="tiny")
    assert parse_options(dict(spec.backend_options)).disabled_fusions == ("SkipLayerNormFusion",)
    assert build_spec("ranker", "fp32", size="tiny").backend_options == ()
    assert build_spec("cnn", "int8", size="tiny").backend_options == ()
