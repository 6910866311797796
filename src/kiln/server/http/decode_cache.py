"""Decoding inference requests whose JSON header was seen before.

A client sending tensors as binary data (Triton's extension; tritonclient and perf_analyzer do)
repeats the same JSON header for every request of one shape: only the bytes after it change.
:class:`RequestDecoder` remembers, per header (up to ``max_header_bytes`` long, at most
``max_entries`` of them), where each input's bytes lie and what the request asked for, so that a
repeated header costs a dictionary lookup and one ``numpy.frombuffer`` per input instead of a JSON
parse and its checks. Only headers whose every input came as numeric binary data are remembered;
a body whose length does not fit the remembered layout, and every other request, is decoded in
full by :func:`~kiln.server.http.codec.decode_request`, so answers and errors are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kiln.server.core import InferRequest
from kiln.server.http.codec import OutputPlan, decode_request, header_span
from kiln.types import Array


@dataclass(frozen=True, slots=True)
class _Layout:
    inputs: tuple[tuple[str, np.dtype[np.generic], tuple[int, ...], int, int], ...]
    binary_bytes: int
    id: str
    outputs: tuple[str, ...] | None
    plan: OutputPlan
    priority: object
    timeout_us: object


class RequestDecoder:
    """:func:`~kiln.server.http.codec.decode_request` with remembered header layouts."""

    def __init__(self, *, max_entries: int = 256, max_header_bytes: int = 4096) -> None:
        self._layouts: dict[bytes, _Layout] = {}
        self._max_entries = max_entries
        self._max_header_bytes = max_header_bytes

    @property
    def num_layouts(self) -> int:
        return len(self._layouts)

    def decode(
        self, body: bytes, header_length: int | None, *, model: str, version: str | None, tenant: str
    ) -> tuple[InferRequest, OutputPlan]:
        """Decode one inference request body; see :func:`~kiln.server.http.codec.decode_request`."""
        json_length = header_span(body, header_length)
        key = None
        if json_length <= self._max_header_bytes:
            key = body if json_length == len(body) else body[:json_length]
            layout = self._layouts.get(key)
            if layout is not None and json_length + layout.binary_bytes == len(body):
                return _from_layout(
                    layout, body, json_length, model=model, version=version, tenant=tenant
                ), layout.plan
        request, plan = decode_request(body, header_length, model=model, version=version, tenant=tenant)
        if key is not None and len(self._layouts) < self._max_entries:
            layout = _layout_of(request, plan, len(body) - json_length)
            if layout is not None:
                self._layouts[key] = layout
        return request, plan


def _layout_of(request: InferRequest, plan: OutputPlan, binary_bytes: int) -> _Layout | None:
    """The request's layout when its inputs are exactly the binary part of the body, in order
    (then every input came as binary data: inline JSON data would add to their sizes)."""
    entries = []
    for name, array in request.inputs.items():
        if array.dtype.kind not in "biufc":
            return None
        entries.append((name, array.dtype, tuple(array.shape), int(array.size), int(array.nbytes)))
    if sum(entry[4] for entry in entries) != binary_bytes:
        return None
    return _Layout(
        tuple(entries), binary_bytes, request.id, request.outputs, plan, request.priority, request.timeout_us
    )


def _from_layout(
    layout: _Layout, body: bytes, cursor: int, *, model: str, version: str | None, tenant: str
) -> InferRequest:
    inputs: dict[str, Array] = {}
    for name, dtype, dims, count, size in layout.inputs:
        array = np.frombuffer(body, dtype=dtype, count=count, offset=cursor).reshape(dims)
        inputs[name] = array if array.flags.aligned else array.copy()
        cursor += size
    return InferRequest(
        model=model,
        inputs=inputs,
        version=version,
        id=layout.id,
        outputs=layout.outputs,
        priority=layout.priority,
        timeout_us=layout.timeout_us,
        tenant=tenant,
    )
