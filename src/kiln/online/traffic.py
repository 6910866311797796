"""Clients of the online loop: threads that send ``ctr`` requests to a server at a steady rate
(tritonclient, HTTP, binary tensors) and report each request's click back as feedback.

Every answer is recorded (send time, latency, the version that answered, its score, the true
label, or the error), and every feedback batch's acknowledgement (its last offset), so a run can be
checked afterwards: failed requests, versions served, AUC of what served against the labels.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from kiln.online.world import ClickWorld
from kiln.types import Array

log = logging.getLogger("kiln.online")
BLOCK_ROWS = 64
MAX_LAG_S = 1.0


@dataclass(frozen=True, slots=True)
class Answer:
    """One request. ``version`` is ``""`` and ``score`` NaN when it failed (``error`` says why);
    ``row`` indexes the client's recorded inputs."""

    client: int
    row: int
    sent_s: float
    latency_s: float
    version: str
    score: float
    label: int
    error: str = ""


@dataclass
class ClientLog:
    """What one client sent and got back."""

    answers: list[Answer] = field(default_factory=list)
    dense: list[Array] = field(default_factory=list)
    sparse: list[Array] = field(default_factory=list)
    acked_offsets: list[int] = field(default_factory=list)
    acked_events: int = 0
    feedback_errors: list[str] = field(default_factory=list)


class Traffic:
    """``clients`` threads sending ``rate_per_s`` requests per second in all to ``http_url``, the
    clicks labelled by ``world`` at ``drift(seconds since start)``; feedback every ``feedback_every_s``."""

    def __init__(
        self,
        http_url: str,
        world: ClickWorld,
        *,
        rate_per_s: float,
        clients: int = 4,
        drift: Callable[[float], float] = lambda _: 0.0,
        feedback_every_s: float = 0.25,
        seed: int = 0,
        model: str = "ctr",
    ) -> None:
        self.http_url, self.world, self.model = http_url, world, model
        self.interval_s = clients / rate_per_s
        self.drift = drift
        self.feedback_every_s = feedback_every_s
        self.seed = seed
        self.logs = [ClientLog() for _ in range(clients)]
        self.stop_event = threading.Event()
        self.started_s = 0.0
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"kiln-client-{i}", daemon=True)
            for i in range(clients)
        ]

    def start(self) -> Traffic:
        self.started_s = time.time()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(timeout_s)

    def answers(self) -> list[Answer]:
        return sorted((a for entry in self.logs for a in entry.answers), key=lambda a: a.sent_s)

    def inputs(self, client: int) -> tuple[Array, Array]:
        entry = self.logs[client]
        return np.asarray(entry.dense), np.asarray(entry.sparse)

    def _run(self, index: int) -> None:
        from tritonclient import http as triton  # noqa: PLC0415 (clients only)

        entry = self.logs[index]
        rng = np.random.default_rng(self.seed * 1000 + index)
        client = triton.InferenceServerClient(self.http_url, network_timeout=30.0)
        feedback = httpx.Client(base_url=f"http://{self.http_url}", timeout=30.0)
        pending: list[dict[str, object]] = []
        last_flush = next_send = time.monotonic() + self.interval_s * index / len(self.logs)
        block: dict[str, Array] = {}
        labels: Array = np.zeros(0, np.int64)
        position = BLOCK_ROWS
        try:
            while not self.stop_event.is_set():
                if position >= BLOCK_ROWS:
                    block = self.world.requests(rng, BLOCK_ROWS)
                    labels = self.world.clicks(block, self.drift(time.time() - self.started_s), rng)
                    position = 0
                dense, sparse = block["dense"][position], block["sparse"][position]
                label = int(labels[position])
                position += 1
                delay = next_send - time.monotonic()
                if delay > 0 and self.stop_event.wait(delay):
                    break
                next_send = max(next_send + self.interval_s, time.monotonic() - MAX_LAG_S)
                row = len(entry.dense)
                entry.dense.append(dense)
                entry.sparse.append(sparse)
                entry.answers.append(self._infer(client, triton, index, row, dense, sparse, label))
                pending.append(
                    {
                        "request_id": f"c{index}-{row}",
                        "label": label,
                        "features": {"dense": dense.tolist(), "sparse": sparse.tolist()},
                    }
                )
                if time.monotonic() - last_flush >= self.feedback_every_s:
                    self._send_feedback(feedback, entry, pending)
                    pending, last_flush = [], time.monotonic()
            if pending:
                self._send_feedback(feedback, entry, pending)
        finally:
            client.close()
            feedback.close()

    def _infer(  # noqa: PLR0917 (one request's parts)
        self, client: Any, triton: Any, index: int, row: int, dense: Array, sparse: Array, label: int
    ) -> Answer:
        inputs = []
        for name, array in (("dense", dense[None, :]), ("sparse", sparse[None, :])):
            tensor = triton.InferInput(name, list(array.shape), "FP32" if name == "dense" else "INT64")
            tensor.set_data_from_numpy(array, binary_data=True)
            inputs.append(tensor)
        sent = time.time()
        started = time.perf_counter()
        try:
            result = client.infer(self.model, inputs)
            latency = time.perf_counter() - started
            output = result.as_numpy(result.get_response()["outputs"][0]["name"])
            version = str(result.get_response()["model_version"])
            return Answer(index, row, sent, latency, version, float(np.asarray(output).reshape(-1)[0]), label)
        except Exception as exc:  # every failure is recorded: the run reports it
            latency = time.perf_counter() - started
            return Answer(index, row, sent, latency, "", float("nan"), label, f"{type(exc).__name__}: {exc}")

    def _send_feedback(
        self, feedback: httpx.Client, entry: ClientLog, events: list[dict[str, object]]
    ) -> None:
        try:
            reply = feedback.post(f"/v2/models/{self.model}/feedback", json={"events": events})
            reply.raise_for_status()
            entry.acked_offsets.append(int(reply.json()["last_offset"]))
            entry.acked_events += len(events)
        except Exception as exc:  # recorded: the run reports feedback that was not acknowledged
            entry.feedback_errors.append(f"{type(exc).__name__}: {exc}")
