"""The serving half of ``kiln demo``: the example repository, and serving it.

:func:`write_repository` turns the demo's work folder into a model repository, one model per
example: ``config.yaml`` with the example's int8 recipe (so the server's builds are cache hits of
the engines the demo just built), version ``1`` (the seed-0 model, published atomically), its
calibration and validation samples, and a ``request.json`` to send with curl.
:func:`client_commands` are the lines printed once the server is ready.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from kiln.examples import get_example, make_samples
from kiln.examples.recipes import INT8_RECIPES
from kiln.examples.recipes import build_spec as recipe_spec
from kiln.repository.layout import CONFIG_FILE, MODEL_FILE
from kiln.repository.publish import publish_version

REQUEST_FILE = "request.json"
"""One request of sample inputs per model, in the KServe v2 JSON format."""
SAMPLE_FOLDERS = ("calibration", "validation")


def repository_config(name: str, size: str) -> dict[str, object]:
    """The ``config.yaml`` of example ``name``: int8 by its recipe, checked against its fp32 model
    on the validation samples, batched up to the example's ``max_batch_size``."""
    example = get_example(name)
    recipe = INT8_RECIPES[name]
    spec = recipe_spec(name, "int8", size=size)  # type: ignore[arg-type]
    assert spec.calibration is not None
    options = {"backend_options": dict(spec.backend_options)} if spec.backend_options else {}
    return {
        "precision": "int8",
        **options,
        "max_batch_size": example.max_batch_size,
        "profiles": {
            p.input: {"min": list(p.min), "opt": list(p.opt), "max": list(p.max)} for p in spec.profiles
        },
        "calibration": {
            "samples_dir": "calibration",
            "method": spec.calibration.method,
            "num_samples": spec.calibration.num_samples,
        },
        "quantization": {
            "per_channel": spec.per_channel,
            "keep_fp32_nodes": list(spec.keep_fp32_nodes),
            "keep_fp32_op_types": list(spec.keep_fp32_op_types),
            "float_output_op_types": list(spec.float_output_op_types),
        },
        "accuracy": {
            "validation_dir": "validation",
            "task": example.task,
            "max_accuracy_drop": recipe.max_accuracy_drop,
        },
        "batching": {"max_queue_delay_us": 500, "preferred_batch_sizes": list(example.batch_sizes)},
    }


def write_repository(work_dir: Path, names: list[str], size: str) -> Path:
    """``work_dir/repo/<name>/``: config, version 1, samples, request (kept when already there)."""
    repo = work_dir / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    for name in names:
        source = work_dir / name
        folder = repo / name
        folder.mkdir(exist_ok=True)
        config = f"# kiln demo: the int8 recipe of the {name} example\n"
        config += yaml.safe_dump(repository_config(name, size), sort_keys=False)
        (folder / CONFIG_FILE).write_text(config)
        for samples in SAMPLE_FOLDERS:
            if not (folder / samples).exists():
                shutil.copytree(source / samples, folder / samples)
        if not (folder / "1").exists():
            publish_version(repo, name, {MODEL_FILE: source / f"{name}.onnx"}, version="1", tag="demo")
        (folder / REQUEST_FILE).write_text(json.dumps({"inputs": request_inputs(name, size)}))
    return repo


def request_inputs(name: str, size: str) -> list[dict[str, object]]:
    """One validation sample of example ``name`` as KServe v2 JSON input tensors."""
    sample = make_samples(name, 1, kind="validation", size=size)  # type: ignore[arg-type]
    return [
        {
            "name": spec.name,
            "datatype": spec.datatype,
            "shape": list(sample[spec.name].shape),
            "data": sample[spec.name].ravel().tolist(),
        }
        for spec in get_example(name).inputs(size)  # type: ignore[arg-type]
    ]


def client_commands(http_url: str, grpc_url: str | None, repo: Path, model: str) -> list[str]:
    """Ready-to-paste commands against a running server: readiness, one JSON inference with curl,
    and a perf_analyzer run (gRPC when served, else HTTP)."""
    request = repo / model / REQUEST_FILE
    lines = [
        f"curl -s http://{http_url}/v2/health/ready -o /dev/null -w '%{{http_code}}\\n'",
        f"curl -s -X POST http://{http_url}/v2/models/{model}/infer "
        f"-H 'Content-Type: application/json' -d @{request}",
        f"curl -s -X POST http://{http_url}/v2/repository/index -d '{{}}'",
    ]
    if grpc_url is not None:
        lines.append(
            f"perf_analyzer -m {model} -u {grpc_url} -i grpc --input-data zero --concurrency-range 16"
        )
    else:
        lines.append(f"perf_analyzer -m {model} -u {http_url} --input-data zero --concurrency-range 16")
    lines.append(f"curl -s http://{http_url}/metrics | grep kiln_requests_total")
    return lines
