"""Resident modules and the standby pool that makes weight refits cost a copy, not a compile.

A ``Resident`` is a module on its device with its compiled forward, plus the instance states
(``GraphRunner``: stream, buffers, captured graphs) its closed instances left behind. Compiled code
and captured graphs read the weights by address, so new weights copied into the same buffers are
what the next replay computes with.

When an engine is closed (the runtime closes it only after its instances are closed and their
worker threads have stopped, i.e. after the version drained), its resident goes to the
``StandbyPool`` instead of being freed. Loading a later version of the same engine key (same
structure, spec and target; other weights) takes that resident and copies the new weights into
it: no compile, no capture. Nothing runs on a pooled resident, so weights are never written while
a run reads them. The pool keeps at most ``max_per_key`` residents per key; what it holds is device
memory that no model is charged for (``held_bytes``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch

from kiln.compile.backends.torch.compiler import Forward
from kiln.compile.backends.torch.prepare import copy_weights, weight_mismatch
from kiln.types import Array

log = logging.getLogger(__name__)


class Runner(Protocol):
    """One instance's execution state (``runners.GraphRunner`` or ``runners.DirectRunner``)."""

    @property
    def device_bytes(self) -> int: ...

    @property
    def host_bytes(self) -> int: ...

    def run(self, arrays: list[Array], rows: int | None, bucket: int | None) -> object: ...

    def replay(self, bucket: int | None) -> None: ...

    def close(self) -> None: ...


@dataclass
class Resident:
    """A compiled module on its device (see the module docstring)."""

    key: str
    module: torch.nn.Module
    forward: Forward
    device: torch.device
    weight_bytes: int
    spare_runners: list[Runner] = field(default_factory=list)

    def load_weights(self, weights: Mapping[str, torch.Tensor]) -> float:
        """Copy ``weights`` into the module's buffers and wait for the copy; the seconds it took.
        ``ValueError`` when they do not fit (names, shapes, dtypes)."""
        problem = weight_mismatch(self.module, weights)
        if problem is not None:
            raise ValueError(problem)
        started = time.perf_counter()
        copy_weights(self.module, weights)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - started

    def device_bytes(self) -> int:
        return self.weight_bytes + sum(r.device_bytes for r in self.spare_runners)

    def free(self) -> None:
        for runner in self.spare_runners:
            runner.close()
        self.spare_runners.clear()


def device_weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer of ``module``."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


class StandbyPool:
    """Closed engines' residents, by engine key, waiting for a refit."""

    def __init__(self, max_per_key: int = 1) -> None:
        self.max_per_key = max_per_key
        self._lock = threading.Lock()
        self._by_key: dict[str, list[Resident]] = {}

    def put(self, resident: Resident) -> None:
        with self._lock:
            held = self._by_key.setdefault(resident.key, [])
            if len(held) < self.max_per_key:
                held.append(resident)
                return
        resident.free()

    def take(self, key: str) -> Resident | None:
        with self._lock:
            held = self._by_key.get(key)
            return held.pop() if held else None

    def held_bytes(self) -> int:
        with self._lock:
            return sum(r.device_bytes() for held in self._by_key.values() for r in held)

    def clear(self) -> None:
        with self._lock:
            residents = [r for held in self._by_key.values() for r in held]
            self._by_key.clear()
        for resident in residents:
            resident.free()
