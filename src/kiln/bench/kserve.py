"""A KServe v2 (Open Inference Protocol) server as a benchmark target, over HTTP or gRPC.

Written against the protocol with tritonclient's asyncio clients, so any KServe v2 server can be
measured (kiln's own, Triton, others). Tensors travel in binary (Triton's binary-tensor extension)
over HTTP and as raw contents over gRPC. The server-side queue/compute split comes from the
statistics extension (``GET /v2/models/<model>/stats``, gRPC ``ModelStatistics``) when the server
has it: the counters are read before and after each step and the delta is reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeAlias

from kiln.bench.results import Reply, ServerCounters
from kiln.errors import ConfigError, ModelNotFound, describe
from kiln.types import DATATYPES, Tensors, TensorSpec, datatype_of

Protocol: TypeAlias = Literal["http", "grpc"]
PROTOCOLS: tuple[Protocol, ...] = ("http", "grpc")


class RequestFailed(Exception):
    """One request answered with an error; ``kind`` is the protocol status (``HTTP 503``,
    ``gRPC UNAVAILABLE``) that the benchmark counts it under."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def split_url(url: str, protocol: str) -> str:
    """``http://host:port/`` or ``host:port`` -> ``host:port`` (what tritonclient takes)."""
    if protocol not in PROTOCOLS:
        raise ConfigError(describe("unknown protocol", seen=protocol, fix="use http or grpc"))
    rest = url.strip()
    for scheme in ("http://", "https://", "grpc://"):
        if rest.startswith(scheme):
            rest = rest[len(scheme) :]
    rest = rest.rstrip("/")
    if not rest or "/" in rest:
        raise ConfigError(describe("bad server address", seen=url, fix="give HOST:PORT, e.g. 127.0.0.1:8000"))
    return rest


class KServeTarget:
    """One model of a KServe v2 server. ``version`` empty means the server's choice.

    ``binary``: over HTTP, send and ask for tensors in Triton's binary extension (default) or as
    JSON lists (what hand-written v2 servers, such as the FastAPI peer, understand).
    """

    def __init__(
        self, url: str, model: str, *, protocol: Protocol = "http", version: str = "", binary: bool = True
    ) -> None:
        self.address = split_url(url, protocol)
        self.url, self.model, self.protocol, self.version = url, model, protocol, version
        self.binary = binary
        self._client: Any = None
        self._specs: tuple[TensorSpec, ...] = ()
        self._outputs: list[Any] | None = None

    @property
    def description(self) -> str:
        return f"{self.protocol} {self.address} {self.model}"

    def _module(self) -> Any:
        if self.protocol == "http":
            import tritonclient.http.aio as client  # noqa: PLC0415
        else:
            import tritonclient.grpc.aio as client  # noqa: PLC0415
        return client

    async def open(self) -> tuple[TensorSpec, ...]:
        self._client = self._module().InferenceServerClient(self.address)
        try:
            live = await self._client.is_server_live()
        except Exception as exc:
            await self.aclose()
            raise ConfigError(
                describe(
                    f"no KServe v2 server answers at {self.url} over {self.protocol}",
                    seen=f"{type(exc).__name__}: {_first_line(exc)}",
                    fix="start the server, or fix --url/--protocol (HTTP and gRPC use different ports)",
                )
            ) from None
        if not live:
            await self.aclose()
            raise ConfigError(describe(f"the server at {self.url} is not live", fix="check its health"))
        self._specs = await self._metadata()
        return self._specs

    async def _metadata(self) -> tuple[TensorSpec, ...]:
        try:
            meta = await self._call("get_model_metadata", self.model, self.version)
        except Exception as exc:
            served = await self._served_models()
            await self.aclose()
            raise ModelNotFound(
                describe(
                    f"the server at {self.url} does not serve model {self.model!r}"
                    + (f" version {self.version}" if self.version else ""),
                    seen=_first_line(exc),
                    fix=f"it serves: {', '.join(served) or 'no models'}",
                )
            ) from None
        if self.protocol == "http":  # ask for outputs in binary too, not as JSON lists
            names = [str(o.get("name")) for o in meta.get("outputs", [])]
            requested = self._module().InferRequestedOutput
            self._outputs = [requested(n, binary_data=self.binary) for n in names] or None
        return parse_inputs(meta)

    async def _call(self, name: str, *args: object) -> Any:
        method = getattr(self._client, name)
        if self.protocol == "grpc":
            return await method(*args, as_json=True)
        return await method(*args)

    async def _served_models(self) -> list[str]:
        try:
            index = await self._call("get_model_repository_index")
        except Exception:
            return []
        entries = index.get("models", []) if isinstance(index, Mapping) else index
        return sorted({str(e.get("name")) for e in entries if isinstance(e, Mapping)})

    async def infer(self, inputs: Tensors) -> Reply:
        client = self._module()
        tensors = []
        for name, array in inputs.items():
            tensor = client.InferInput(name, list(array.shape), datatype_of(array.dtype))
            if self.protocol == "http":
                tensor.set_data_from_numpy(array, binary_data=self.binary)
            else:
                tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        try:
            await self._client.infer(self.model, tensors, model_version=self.version, outputs=self._outputs)
        except Exception as exc:
            raise RequestFailed(status_kind(exc, self.protocol), _first_line(exc)) from None
        return Reply()

    async def counters(self) -> ServerCounters | None:
        try:
            stats = await self._call("get_inference_statistics", self.model, self.version)
        except Exception:
            return None  # the server has no statistics extension
        return parse_counters(stats)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()


def status_kind(exc: BaseException, protocol: str) -> str:
    """``HTTP 503`` / ``gRPC UNAVAILABLE`` from a tritonclient error, else the exception class."""
    status = getattr(exc, "status", None)
    value = status() if callable(status) else None
    if value is None:
        return type(exc).__name__
    text = str(value).removeprefix("StatusCode.")
    return f"HTTP {text}" if protocol == "http" else f"gRPC {text}"


def parse_inputs(meta: Mapping[str, Any]) -> tuple[TensorSpec, ...]:
    """The inputs of a model metadata response (HTTP JSON, or gRPC as JSON)."""
    specs = []
    for entry in meta.get("inputs", []):
        datatype = str(entry.get("datatype"))
        if datatype not in DATATYPES:
            raise ConfigError(describe(f"input {entry.get('name')!r} has an unknown datatype", seen=datatype))
        shape = tuple(int(d) for d in entry.get("shape", []))
        specs.append(TensorSpec(str(entry.get("name")), datatype, shape))
    if not specs:
        raise ConfigError(describe("the model metadata lists no inputs", seen=dict(meta)))
    return tuple(specs)


def parse_counters(stats: Mapping[str, Any]) -> ServerCounters:
    """Sum the statistics extension's counters over the versions listed (int64s may be strings)."""
    success = fail = queue = compute = 0
    entries: Sequence[Mapping[str, Any]] = stats.get("model_stats", [])
    for entry in entries:
        inference = entry.get("inference_stats", {})

        def pair(name: str, inference: Mapping[str, Any] = inference) -> tuple[int, int]:
            value = inference.get(name, {})
            return int(value.get("count", 0)), int(value.get("ns", 0))

        success += pair("success")[0]
        fail += pair("fail")[0]
        queue += pair("queue")[1]
        compute += sum(pair(p)[1] for p in ("compute_input", "compute_infer", "compute_output"))
    return ServerCounters(success, fail, queue, compute)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
