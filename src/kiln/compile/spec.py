"""What to build: precision, calibration, shape profiles, batch limits and backend options.

These are frozen dataclasses used inside kiln. Files, the CLI and HTTP parse into them through
pydantic models at the edge. Every field that changes the engine that comes out is listed in
``cache_factors()``, which the engine cache hashes into the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal, TypeAlias

from kiln.types import ShapeProfile

Precision: TypeAlias = Literal["fp32", "fp16", "bf16", "int8"]
CalibrationMethod: TypeAlias = Literal["minmax", "entropy", "percentile"]
Task: TypeAlias = Literal["none", "classifier", "ctr", "ranker"]
QuantType: TypeAlias = Literal["uint8", "int8"]

PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "bf16", "int8")
CALIBRATION_METHODS: tuple[CalibrationMethod, ...] = ("minmax", "entropy", "percentile")
TASKS: tuple[Task, ...] = ("none", "classifier", "ctr", "ranker")


@dataclass(frozen=True, slots=True)
class CalibrationSpec:
    """How INT8 activation ranges are chosen.

    ``entropy`` is a KL-divergence search over a fine histogram (``num_bins`` bins folded into
    ``num_quantized_bins`` quantized bins, TensorRT style); ``percentile`` clips at ``percentile``;
    ``minmax`` takes the observed extremes. ``num_samples`` caps how many samples are used;
    ``stratify_by`` names a key column in the calibration files by which samples are drawn
    evenly, so rare segments are represented.
    """

    method: CalibrationMethod = "minmax"
    num_samples: int = 256
    num_bins: int = 2048
    num_quantized_bins: int = 128
    percentile: float = 99.999
    stratify_by: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError(f"calibration num_samples must be >= 1, seen {self.num_samples}")
        if self.num_quantized_bins < 2 or self.num_bins < self.num_quantized_bins:
            raise ValueError(
                f"calibration needs num_bins ({self.num_bins}) >= num_quantized_bins "
                f"({self.num_quantized_bins}) >= 2"
            )
        if not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"calibration percentile must be in (50, 100], seen {self.percentile}")

    def cache_factors(self) -> dict[str, object]:
        return {
            "method": self.method,
            "num_samples": self.num_samples,
            "num_bins": self.num_bins,
            "num_quantized_bins": self.num_quantized_bins,
            "percentile": self.percentile,
            "stratify_by": self.stratify_by,
            "seed": self.seed,
        }


@dataclass(frozen=True, slots=True)
class BuildSpec:
    """Everything that decides what engine a model becomes (besides the model and the target).

    Fields:
        precision: ``fp32`` (no change), ``fp16``/``bf16`` (float conversion, I/O kept fp32),
            ``int8`` (QDQ static quantization from calibration).
        calibration: how INT8 ranges are chosen; required for ``int8``.
        per_channel: INT8 weights quantized per output channel.
        activation_type / weight_type: INT8 storage types; ``uint8`` activations with ``int8``
            weights (U8S8) is the fast choice on x86.
        keep_fp32_nodes / keep_fp32_op_types: nodes or op types left in fp32 (mixed precision).
        float_output_op_types: int8 op types whose results go on as floats instead of being
            quantized again (QDQ placement). For MatMul/Gemm, ONNX Runtime then multiplies in
            integers, produces floats and fuses the bias add: faster, and one rounding fewer.
        profiles: allowed shapes per input (min/opt/max); empty means any shape the model declares.
        max_batch_size: largest batch the engine is built and served for.
        workspace_bytes: scratch memory a backend may use while building (TensorRT); 0 = default.
        backend: which backend builds the engine (``onnxruntime``, ``torch``, ``tensorrt``).
        backend_options: backend-specific knobs, as sorted (name, value) pairs.
        task / max_accuracy_drop: how accuracy against fp32 is judged and the largest drop accepted
            (1 - top-1 agreement for ``classifier``, AUC loss for ``ctr``, 1 - Spearman for
            ``ranker``, relative L2 error for ``none``). ``None`` disables the gate. Not a cache
            factor: the measured accuracy is stored with the engine and re-checked on a hit.
    """

    precision: Precision = "fp32"
    calibration: CalibrationSpec | None = None
    per_channel: bool = False
    activation_type: QuantType = "uint8"
    weight_type: QuantType = "int8"
    keep_fp32_nodes: tuple[str, ...] = ()
    keep_fp32_op_types: tuple[str, ...] = ()
    float_output_op_types: tuple[str, ...] = ()
    profiles: tuple[ShapeProfile, ...] = ()
    max_batch_size: int = 32
    workspace_bytes: int = 0
    backend: str = "onnxruntime"
    backend_options: tuple[tuple[str, str], ...] = ()
    task: Task = "none"
    max_accuracy_drop: float | None = None

    def __post_init__(self) -> None:
        if self.precision == "int8" and self.calibration is None:
            object.__setattr__(self, "calibration", CalibrationSpec())
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, seen {self.max_batch_size}")
        if self.workspace_bytes < 0:
            raise ValueError(f"workspace_bytes must be >= 0, seen {self.workspace_bytes}")
        if self.max_accuracy_drop is not None and self.max_accuracy_drop < 0:
            raise ValueError(f"max_accuracy_drop must be >= 0, seen {self.max_accuracy_drop}")
        names = [p.input for p in self.profiles]
        if len(set(names)) != len(names):
            raise ValueError(f"one profile per input, seen inputs {names}")
        object.__setattr__(self, "backend_options", tuple(sorted(self.backend_options)))

    def option(self, name: str, default: str | None = None) -> str | None:
        return dict(self.backend_options).get(name, default)

    def profile_for(self, input_name: str) -> ShapeProfile | None:
        return next((p for p in self.profiles if p.input == input_name), None)

    def with_changes(self, **changes: object) -> BuildSpec:
        return replace(self, **changes)  # type: ignore[arg-type]

    def cache_factors(self) -> dict[str, object]:
        """The fields that change the engine, as plain JSON-able data, for the cache key.

        ``float_output_op_types`` is listed only when set (int8), so that keys of specs without it
        are the same as before it existed."""
        factors: dict[str, object] = {
            "precision": self.precision,
            "calibration": self.calibration.cache_factors()
            if self.precision == "int8" and self.calibration
            else None,
            "per_channel": self.per_channel if self.precision == "int8" else None,
            "activation_type": self.activation_type if self.precision == "int8" else None,
            "weight_type": self.weight_type if self.precision == "int8" else None,
            "keep_fp32_nodes": sorted(self.keep_fp32_nodes),
            "keep_fp32_op_types": sorted(self.keep_fp32_op_types),
            "profiles": [p.to_json() for p in sorted(self.profiles, key=lambda p: p.input)],
            "max_batch_size": self.max_batch_size,
            "workspace_bytes": self.workspace_bytes,
            "backend": self.backend,
            "backend_options": [list(kv) for kv in self.backend_options],
        }
        if self.precision == "int8" and self.float_output_op_types:
            factors["float_output_op_types"] = sorted(self.float_output_op_types)
        return factors

    def to_json(self) -> dict[str, object]:
        data = self.cache_factors()
        data["calibration"] = self.calibration.cache_factors() if self.calibration else None
        data["float_output_op_types"] = sorted(self.float_output_op_types)
        data["task"] = self.task
        data["max_accuracy_drop"] = self.max_accuracy_drop
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> BuildSpec:
        cal = data.get("calibration")
        profiles = data.get("profiles") or []
        assert isinstance(profiles, list)
        options = data.get("backend_options") or []
        assert isinstance(options, list)
        return cls(
            precision=data.get("precision", "fp32"),  # type: ignore[arg-type]
            calibration=CalibrationSpec(**cal) if isinstance(cal, dict) else None,
            per_channel=bool(data.get("per_channel") or False),
            activation_type=data.get("activation_type") or "uint8",  # type: ignore[arg-type]
            weight_type=data.get("weight_type") or "int8",  # type: ignore[arg-type]
            keep_fp32_nodes=tuple(data.get("keep_fp32_nodes") or ()),  # type: ignore[arg-type]
            keep_fp32_op_types=tuple(data.get("keep_fp32_op_types") or ()),  # type: ignore[arg-type]
            float_output_op_types=tuple(data.get("float_output_op_types") or ()),  # type: ignore[arg-type]
            profiles=tuple(ShapeProfile.from_json(p) for p in profiles),
            max_batch_size=int(data.get("max_batch_size", 32)),  # type: ignore[call-overload]
            workspace_bytes=int(data.get("workspace_bytes", 0)),  # type: ignore[call-overload]
            backend=str(data.get("backend", "onnxruntime")),
            backend_options=tuple((str(k), str(v)) for k, v in options),
            task=data.get("task", "none"),  # type: ignore[arg-type]
            max_accuracy_drop=data.get("max_accuracy_drop"),  # type: ignore[arg-type]
        )
