"""Feedback intake: the server side of ``POST /v2/models/{m}/feedback`` and of the gRPC
``kiln.feedback.FeedbackService``. Parses and checks a batch, appends it to the
:class:`~kiln.feedback.FeedbackStore` on a worker thread (never on the event loop), and
acknowledges only once the store says the batch is durable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from kiln.errors import InvalidInput, describe
from kiln.feedback import FeedbackStore, parse_events
from kiln.repository.layout import is_model_name

JSON = dict[str, int]


class FeedbackIntake:
    """Appends feedback batches for the server. One writer thread: SQLite serialises writes anyway."""

    def __init__(self, store: FeedbackStore, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._wall_clock = wall_clock
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kiln-feedback")
        self.num_events = 0

    async def submit(self, model: str, body: object) -> JSON:
        """Store the events of ``body`` (see :func:`kiln.feedback.parse_events`) for ``model``.

        Returns ``{"accepted": n, "first_offset": a, "last_offset": b}`` after the durable write;
        ``InvalidInput`` (400 / INVALID_ARGUMENT) naming the bad field otherwise.
        """
        if not is_model_name(model):
            raise InvalidInput(
                describe("not a model name", seen=model, fix="use the name the model is served as")
            )
        events = parse_events(model, body, now_s=self._wall_clock())
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._writer, self.store.append, events)
        self.num_events += result.count
        return {"accepted": result.count, "first_offset": result.first, "last_offset": result.last}

    def close(self) -> None:
        self._writer.shutdown(wait=True)
