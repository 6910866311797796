"""A loaded torch engine (one resident, compiled module) and its instances.

The engine holds the weights once. Each instance owns a runner: on CUDA with graphs on, its own
stream, pinned buffers and captured graph per batch bucket (``runners.GraphRunner``). A batch of
``n`` rows runs in the smallest bucket holding it, padded with zero rows that are cut off the
outputs. Sticky CUDA errors poison the process (``device_health``); out-of-range gather indices
are refused as ``InvalidInput``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from kiln.compile.backends.torch.compiler import pinned_numerics
from kiln.compile.backends.torch.device_health import check_alive, map_device_error
from kiln.compile.backends.torch.options import pick_bucket
from kiln.compile.backends.torch.runners import DirectRunner, GraphRunner, RunResult
from kiln.errors import EngineFailed, InvalidInput, NotReady, describe
from kiln.model.signature import check_inputs
from kiln.types import Array, ShapeProfile, Tensors, TensorSpec

if TYPE_CHECKING:
    from kiln.compile.backends.torch.resident import Resident, Runner

log = logging.getLogger(__name__)


def is_batchable(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> bool:
    """Every input and output has a variable first (batch) axis."""
    return all(s.shape[:1] == (-1,) for s in (*inputs, *outputs))


class TorchEngine:
    """A resident compiled module, its signature and the buckets it runs (see the module docstring).

    ``load_report`` says how it was loaded: ``path`` (``compiled``: converted and compiled, from the
    artifact's compile cache; ``standby-refit``: weights copied into a pooled resident) and seconds.
    """

    def __init__(
        self,
        resident: Resident,
        *,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        profiles: tuple[ShapeProfile, ...],
        max_batch_size: int,
        buckets: tuple[int, ...],
        make_runner: Callable[[], Runner],
        release: Callable[[Resident], None] | None,
        has_flag: bool,
        load_report: dict[str, object],
        name: str = "engine",
    ) -> None:
        self._resident: Resident | None = resident
        self._inputs, self._outputs, self._profiles = inputs, outputs, profiles
        self._max_batch_size = max_batch_size
        self.batchable = is_batchable(inputs, outputs)
        self.buckets: tuple[int | None, ...] = buckets if self.batchable else (None,)
        self._make_runner = make_runner
        self._release = release
        self.has_flag = has_flag
        self.load_report = load_report
        self.name = name
        self._lock = threading.Lock()
        self._open: set[TorchInstance] = set()
        self._live_runner_bytes = 0

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    @property
    def profiles(self) -> tuple[ShapeProfile, ...]:
        return self._profiles

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    @property
    def prepares_per_shape(self) -> bool:
        """``True``: each bucket has its own compiled kernels and captured graph, made on first use."""
        return True

    @property
    def resident(self) -> Resident:
        resident = self._resident
        if resident is None:
            raise NotReady(describe(f"engine {self.name!r} is closed", fix="load the artifact again"))
        return resident

    def create_instance(self) -> TorchInstance:
        """An instance: a recycled runner of this resident if one is free, else a new one (on CUDA
        with graphs: a new stream, buffers and one captured graph per bucket)."""
        check_alive(f"engine {self.name}")
        resident = self.resident
        with self._lock:
            runner = resident.spare_runners.pop() if resident.spare_runners else None
        if runner is None:
            try:
                runner = self._make_runner()
            except Exception as exc:
                raise map_device_error(exc, f"creating an instance of {self.name}") from exc
        instance = TorchInstance(self, runner)
        with self._lock:
            self._open.add(instance)
            self._live_runner_bytes += runner.device_bytes
        return instance

    def _instance_closed(self, instance: TorchInstance, *, reusable: bool) -> None:
        runner = instance.runner
        with self._lock:
            self._open.discard(instance)
            self._live_runner_bytes -= runner.device_bytes
            resident = self._resident
            if reusable and resident is not None:
                resident.spare_runners.append(runner)
                return
        runner.close()

    def memory_bytes(self) -> int:
        """Device bytes (host bytes on a CPU engine) this engine holds: its weights, plus what its
        instances reserved (measured while capturing their graphs: activations, outputs, pools)."""
        resident = self._resident
        if resident is None:
            return 0
        with self._lock:
            return resident.device_bytes() + self._live_runner_bytes

    def close(self) -> None:
        """Release the engine. With no instance open and the device healthy, its resident (and the
        runners of its closed instances) goes to the standby pool for a later weight refit."""
        with self._lock:
            resident, self._resident = self._resident, None
            still_open = len(self._open)
        if resident is None:
            return
        if still_open or self._release is None:
            if still_open:
                log.warning(
                    "engine %s closed with %d instance(s) open; not kept for refit", self.name, still_open
                )
            resident.free()
            return
        self._release(resident)


class TorchInstance:
    """One runner's handle on a torch engine; one thread at a time."""

    def __init__(self, engine: TorchEngine, runner: Runner) -> None:
        self._engine = engine
        self.runner = runner
        self._closed = False
        self._broken = False
        self._names = [s.name for s in engine.inputs]
        self._output_names = [s.name for s in engine.outputs]

    def run(self, inputs: Tensors) -> dict[str, Array]:
        """Run one batch. ``InvalidInput`` for inputs outside the signature, profiles or buckets,
        or gather indices out of range; ``EngineDead`` after a sticky CUDA error; ``EngineFailed``
        for other failures."""
        engine = self._engine
        if self._closed:
            raise EngineFailed(describe("this engine instance is closed", fix="create a new instance"))
        check_alive(f"engine {engine.name}")
        check_inputs(engine.inputs, inputs, engine.profiles)
        rows, bucket = self._bucket(inputs)
        arrays = [inputs[name] for name in self._names]
        try:
            result = self.runner.run(arrays, rows, bucket)
        except Exception as exc:
            self._broken = True
            raise map_device_error(exc, f"engine {engine.name}") from exc
        assert isinstance(result, RunResult)
        if result.index_error:
            raise InvalidInput(
                describe(
                    "an index input (an embedding or gather id) is out of range for its table",
                    fix="send ids within the sizes of the model's tables",
                )
            )
        return dict(zip(self._output_names, result.outputs, strict=True))

    def _bucket(self, inputs: Tensors) -> tuple[int | None, int | None]:
        engine = self._engine
        if not engine.batchable:
            return None, None
        rows = int(inputs[self._names[0]].shape[0])
        buckets = tuple(b for b in engine.buckets if b is not None)
        bucket = pick_bucket(rows, buckets)
        if bucket is None:
            raise InvalidInput(
                describe(
                    f"batch of {rows} rows", fix=f"send at most {buckets[-1]} rows per run (largest bucket)"
                )
            )
        return rows, bucket

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._engine._instance_closed(self, reusable=not self._broken)


def make_runner_factory(
    resident: Resident,
    specs: Sequence[TensorSpec],
    shapes: Sequence[tuple[int, ...]],
    buckets: Sequence[int | None],
    *,
    graphs: bool,
    has_flag: bool,
    numerics: Mapping[str, object] | None = None,
) -> Callable[[], Runner]:
    """Runners for ``resident``: CUDA graph runners when ``graphs`` (and on CUDA), else direct."""

    def make() -> Runner:
        if graphs and resident.device.type == "cuda":
            with pinned_numerics(numerics or {}):
                return GraphRunner(
                    resident.forward, specs, shapes, buckets, resident.device, has_flag=has_flag
                )
        return DirectRunner(resident.forward, resident.device, has_flag=has_flag)

    return make
