"""The benchmark's models, generated on the spot (random weights, nothing downloaded).

* ResNet-50: torchvision's ``resnet50(weights=None)`` (the same layout re-implemented here when
  torchvision is absent, e.g. on a CPU smoke run), BatchNorm statistics calibrated on random batches
  so activations stay in range, exported to ONNX with a dynamic batch axis.
* BERT: Hugging Face ``transformers`` ``BertModel`` from a config (random init, SDPA attention),
  exported with ``torch.export`` (dynamic batch, fixed sequence length) to ``model.pt2``.
* CTR: kiln's DLRM-style example model (``kiln.examples``), ONNX.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

BERT_SIZES: dict[str, dict[str, int]] = {
    "bert-large": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
    },
    "bert-base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
    },
    "bert-tiny": {
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 512,
    },
}


class _Bottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        width = planes
        self.conv1, self.bn1 = nn.Conv2d(inplanes, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class _ResNet50(nn.Module):
    """torchvision's ResNet-50 layout (used only where torchvision is not installed)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1, self.relu, self.maxpool = nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        layers, inplanes = [], 64
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            stage = []
            for index in range(blocks):
                stage.append(_Bottleneck(inplanes, planes, stride if index == 0 else 1))
                inplanes = planes * 4
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(2048, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet50(seed: int, device: str, image: int = 224) -> tuple[nn.Module, str]:
    """A random-weight ResNet-50 with calibrated BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    try:
        from torchvision.models import resnet50 as torchvision_resnet50

        model, origin = torchvision_resnet50(weights=None), "torchvision"
    except ImportError:
        model, origin = _ResNet50(), "kiln benchmark re-implementation"
    model = model.to(device).train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(32, 3, image, image, device=device))
    return model.eval(), origin


def export_onnx(
    model: nn.Module, path: Path, example: torch.Tensor, input_name: str, output_name: str
) -> Path:
    """Legacy exporter, opset 17, dynamic batch axis (BatchNorm folds into the convolutions)."""
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=[input_name],
        output_names=[output_name],
        dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return path


class BertEncoder(nn.Module):
    """``BertModel`` returning ``(last_hidden_state, pooler_output)`` as plain tensors."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state, out.pooler_output


def bert(size: str, seed: int, device: str) -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(**BERT_SIZES[size], attn_implementation="sdpa")
    return BertEncoder(BertModel(config)).to(device).eval()


def bert_inputs(batch: int, seq: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (batch, seq), generator=generator)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[:, seq - seq // 8 :] = torch.randint(0, 2, (batch, seq // 8), generator=generator)
    return ids.to(device), mask.to(device)


def export_program(model: nn.Module, path: Path, example: tuple[torch.Tensor, ...], max_batch: int) -> Path:
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    shapes: Any = tuple({0: batch} for _ in example)
    program = torch.export.export(model, example, dynamic_shapes=shapes)
    torch.export.save(program, str(path))
    return path


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    import time

    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started
