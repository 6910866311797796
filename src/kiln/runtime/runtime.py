"""Runtime: every served model of one process, behind one small facade with no HTTP in it.

The server (KServe v2 over HTTP and gRPC) is written against this class: ``infer`` for requests,
``load_version``/``rollback``/``unload`` for the repository, ``status``/``stats`` for metrics and
the statistics extension, ``is_live``/``is_ready`` for the health endpoints.
"""

from __future__ import annotations

import asyncio

from kiln._clock import SYSTEM_CLOCK, Clock
from kiln.errors import ConfigError, ModelNotFound, describe
from kiln.runtime.checks import GoldenSet
from kiln.runtime.config import ModelConfig
from kiln.runtime.loader import EngineSource, VersionHandle
from kiln.runtime.results import InferResult, RuntimeStatus
from kiln.runtime.slot import ModelSlot
from kiln.runtime.stats import ModelStats
from kiln.types import Tensors


class Runtime:
    """The models served by one process. Methods other than ``infer``/``aclose`` never block."""

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._slots: dict[str, ModelSlot] = {}

    def add_model(self, name: str, config: ModelConfig | None = None) -> ModelSlot:
        """Register a model (no version yet). ``ConfigError`` when the name is taken."""
        if name in self._slots:
            raise ConfigError(describe(f"model {name!r} is already registered", fix="use another name"))
        slot = ModelSlot(name, config, clock=self._clock)
        self._slots[name] = slot
        return slot

    def model(self, name: str) -> ModelSlot:
        """The slot of ``name``; ``ModelNotFound`` naming the known models otherwise."""
        try:
            return self._slots[name]
        except KeyError:
            raise ModelNotFound(
                describe(f"no model named {name!r}", fix=f"known models: {sorted(self._slots)}")
            ) from None

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self._slots)

    async def infer(
        self,
        model: str,
        inputs: Tensors,
        *,
        priority: int = 0,
        timeout_s: float | None = None,
        version: str | None = None,
    ) -> InferResult:
        """Run one request on ``model``; see :meth:`ModelSlot.infer`."""
        return await self.model(model).infer(inputs, priority=priority, timeout_s=timeout_s, version=version)

    def load_version(
        self,
        model: str,
        version: str,
        engine: EngineSource,
        *,
        fallback: EngineSource | None = None,
        golden: GoldenSet | None = None,
    ) -> VersionHandle:
        """Start loading a version of a registered model; see :meth:`ModelSlot.load_version`."""
        return self.model(model).load_version(version, engine, fallback=fallback, golden=golden)

    def rollback(self, model: str) -> VersionHandle:
        return self.model(model).rollback()

    def unload(self, model: str, version: str | None = None) -> VersionHandle:
        return self.model(model).unload(version)

    async def remove_model(self, model: str) -> None:
        """Unload every version of ``model`` (draining them) and forget it."""
        slot = self.model(model)
        await slot.aclose()
        del self._slots[model]

    def is_live(self) -> bool:
        """False while any model's primary engine is dead (the orchestrator should restart us)."""
        return all(slot.is_live() for slot in self._slots.values())

    def is_ready(self) -> bool:
        """True when every registered model has an active version that can serve."""
        return all(slot.is_ready() for slot in self._slots.values())

    def status(self) -> RuntimeStatus:
        models = tuple(slot.status() for slot in self._slots.values())
        return RuntimeStatus(
            live=all(m.live for m in models), ready=all(m.ready for m in models), models=models
        )

    def stats(self) -> dict[str, ModelStats]:
        return {name: slot.stats() for name, slot in self._slots.items()}

    async def probe(self) -> None:
        """Probe every unhealthy primary that is due (the slots also do this on their own timer)."""
        await asyncio.gather(*(slot.probe() for slot in self._slots.values()))

    async def aclose(self) -> None:
        """Drain and release every model."""
        await asyncio.gather(*(slot.aclose() for slot in self._slots.values()))
        self._slots.clear()
