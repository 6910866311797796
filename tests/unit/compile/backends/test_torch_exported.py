"""``.pt2`` sources (torch.export programs): signature, fingerprint, lower precision, build and refit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch backend needs torch (the `torch` extra)")

from kiln.compile.artifact import write_manifest  # noqa: E402
from kiln.compile.backends.torch import TorchBackend  # noqa: E402
from kiln.compile.backends.torch.exported import load_exported  # noqa: E402
from kiln.compile.backends.torch.program import program_module  # noqa: E402
from kiln.compile.spec import BuildSpec  # noqa: E402
from kiln.errors import ModelError  # noqa: E402


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.norm = torch.nn.LayerNorm(4)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, image: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = torch.relu(self.conv(image)).mean(dim=(2, 3))
        hidden = self.norm(pooled) * scale
        offset = torch.full(hidden.shape, 0.25, dtype=torch.float32)
        return {"logits": self.head(hidden + offset), "hidden": hidden}


def export(path: Path, seed: int) -> tuple[Path, Tiny]:
    torch.manual_seed(seed)
    model = Tiny().eval()
    batch = torch.export.Dim("batch", min=1, max=16)
    args = (torch.randn(2, 3, 6, 6), torch.randn(2, 4))
    torch.export.save(torch.export.export(model, args, dynamic_shapes=({0: batch}, {0: batch})), str(path))
    return path, model


def inputs(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(rows)
    return torch.randn(rows, 3, 6, 6, generator=generator), torch.randn(rows, 4, generator=generator)


def test_signature_and_fingerprint(tmp_path: Path) -> None:
    one = load_exported(export(tmp_path / "a.pt2", 0)[0])
    two = load_exported(export(tmp_path / "b.pt2", 1)[0])
    assert one.format == "pt2"
    assert one.model is None
    assert [(s.name, s.datatype, s.shape) for s in one.inputs] == [
        ("image", "FP32", (-1, 3, 6, 6)),
        ("scale", "FP32", (-1, 4)),
    ]
    assert [(s.name, s.shape) for s in one.outputs] == [("logits", (-1, 2)), ("hidden", (-1, 4))]
    assert one.fingerprint.structure_hash == two.fingerprint.structure_hash
    assert one.fingerprint.weights_hash != two.fingerprint.weights_hash


def test_a_file_that_is_no_program_is_a_model_error(tmp_path: Path) -> None:
    (tmp_path / "bad.pt2").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match=r"torch\.export\.save"):
        load_exported(tmp_path / "bad.pt2")


def test_bf16_program_keeps_io_dtypes_and_kept_modules_in_fp32(tmp_path: Path) -> None:
    path, model = export(tmp_path / "m.pt2", 0)
    source = load_exported(path)
    module = program_module(
        path, source.outputs, float_dtype=torch.bfloat16, keep_fp32_op_types=("LayerNorm",)
    )
    params = dict(module.program.named_parameters())
    assert params["norm.weight"].dtype == torch.float32
    assert params["head.weight"].dtype == torch.bfloat16
    args = inputs(5)
    with torch.no_grad():
        got = module(*args)
        want = model(*args)
    assert [t.dtype for t in got] == [torch.float32, torch.float32]
    error = (got[0] - want["logits"]).norm() / want["logits"].norm()
    assert float(error) < 3e-2


def test_build_load_and_refit_a_program(tmp_path: Path) -> None:
    backend = TorchBackend(device="cpu")
    spec = BuildSpec(
        precision="fp32",
        max_batch_size=8,
        backend="torch",
        backend_options=(("compile", "eager"), ("buckets", "4,8")),
    )
    path1, model1 = export(tmp_path / "v1.pt2", 0)
    path2, model2 = export(tmp_path / "v2.pt2", 1)
    source1, source2 = load_exported(path1), load_exported(path2)
    output = backend.build(source1, spec, tmp_path / "e1")
    assert output.engine_file == "program.pt2"
    artifact = write_manifest(
        tmp_path / "e1",
        key="k",
        source=source1,
        spec=spec,
        target=backend.target(),
        output=output,
        build_seconds=0.0,
    )
    engine = backend.load(artifact)
    instance = engine.create_instance()
    args = inputs(3)
    got = instance.run({"image": args[0].numpy(), "scale": args[1].numpy()})
    np.testing.assert_allclose(got["logits"], model1(*args)["logits"].detach().numpy(), rtol=1e-5, atol=1e-6)
    instance.close()
    engine.close()
    refitted = backend.refit(artifact, source2, tmp_path / "e2")
    artifact2 = write_manifest(
        tmp_path / "e2",
        key="k",
        source=source2,
        spec=spec,
        target=backend.target(),
        output=refitted,
        build_seconds=0.0,
    )
    engine2 = backend.load(artifact2)
    assert engine2.load_report["path"] == "standby-refit"
    got2 = engine2.create_instance().run({"image": args[0].numpy(), "scale": args[1].numpy()})
    np.testing.assert_allclose(got2["logits"], model2(*args)["logits"].detach().numpy(), rtol=1e-5, atol=1e-6)
