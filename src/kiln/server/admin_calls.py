"""Repository and admin calls as data: what one worker of ``kiln serve --workers N`` sends the
others (:class:`AdminCall`, one JSON line), what each answers (:class:`PeerReply`), and whether
the call reached every worker (:func:`check_replies`). Pure: the sockets are in
:mod:`kiln.server.workers_admin`.

``stats`` is the one read-only call: it asks a worker for its own model statistics
(:mod:`kiln.server.workers_stats` merges them), changes nothing and is never sent further.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, cast, get_args

import orjson

from kiln.errors import ConfigError, InvalidInput, KilnError, describe
from kiln.runtime import FaultSpec

Op = Literal["load", "unload", "rollback", "faults", "stats"]
OPS: tuple[str, ...] = get_args(Op)
READ_ONLY_OPS: tuple[str, ...] = ("stats",)
"""Calls that change nothing: their reply carries a result (:attr:`PeerReply.result`)."""
FAULT_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(FaultSpec))
_KEYS = frozenset({"op", "model", "faults", "target"})


class WorkersDiverged(KilnError):
    """An admin call was applied by the worker that answered, but not by every other worker."""


@dataclass(frozen=True, slots=True)
class AdminCall:
    """One repository/admin call: ``load``, ``unload`` or ``rollback`` of ``model``, or ``faults``
    (``faults`` injected into ``model``'s ``target`` engine; ``None`` clears them), or ``stats``
    (read-only: the statistics of ``model``'s resident versions; ``model=""``: of every model)."""

    op: Op
    model: str
    faults: FaultSpec | None = None
    target: str = "primary"

    def encode(self) -> bytes:
        """One JSON line (see :meth:`decode`)."""
        faults = None if self.faults is None else dataclasses.asdict(self.faults)
        call = {"op": self.op, "model": self.model, "faults": faults, "target": self.target}
        return orjson.dumps(call) + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> AdminCall:
        """The call in ``line``; :class:`~kiln.errors.InvalidInput` naming what is wrong otherwise."""
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(describe("an admin call is not valid JSON", seen=str(exc))) from None
        if not isinstance(data, dict):
            raise InvalidInput(describe("an admin call must be a JSON object", seen=type(data).__name__))
        if unknown := sorted(set(data) - _KEYS):
            raise InvalidInput(
                describe("an admin call has unknown fields", seen=unknown, fix=f"use {sorted(_KEYS)}")
            )
        op, model, target = data.get("op"), data.get("model"), data.get("target", "primary")
        if op not in OPS:
            raise InvalidInput(describe("unknown admin call", seen=op, fix=f"one of {', '.join(OPS)}"))
        if not isinstance(model, str) or not (model or op == "stats"):
            raise InvalidInput(
                describe("an admin call must name its model", seen=repr(model), fix="give a non-empty string")
            )
        if not isinstance(target, str):
            raise InvalidInput(describe("an admin call's target must be a string", seen=target))
        faults = data.get("faults")
        if faults is not None and op != "faults":
            raise InvalidInput(describe(f"a {op} call takes no faults", seen=faults, fix="leave them out"))
        return cls(cast(Op, op), model, None if faults is None else _fault_spec(faults), target)


def _fault_spec(faults: object) -> FaultSpec:
    if not isinstance(faults, dict):
        raise InvalidInput(describe("an admin call's faults must be a JSON object", seen=faults))
    if unknown := sorted(set(faults) - set(FAULT_FIELDS)):
        raise InvalidInput(
            describe("an admin call names unknown faults", seen=unknown, fix=f"use {list(FAULT_FIELDS)}")
        )
    for name, value in faults.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(describe(f"fault {name} must be a number", seen=value))
    try:
        return FaultSpec(**cast(Mapping[str, int], faults))
    except (ConfigError, TypeError) as exc:
        raise InvalidInput(describe("an admin call's faults are invalid", seen=str(exc))) from None


@dataclass(frozen=True, slots=True)
class PeerReply:
    """What worker ``worker`` answered: ``status`` 200 when it applied the call, the HTTP status of
    its error otherwise (``message`` says why), ``None`` when it did not answer (``message`` says
    what happened: no socket, refused connection, no reply in time). ``result``: what a read-only
    call (``READ_ONLY_OPS``) answered, as JSON."""

    worker: int
    status: int | None
    message: str = ""
    result: object = None


def check_replies(call: AdminCall, own: int, replies: Sequence[PeerReply]) -> None:
    """Raise :class:`WorkersDiverged` unless every other worker applied ``call``; ``own`` is the
    worker that applied it first and sent it on."""
    failed = [r for r in replies if r.status != 200]
    if not failed:
        return
    applied = sorted([own, *(r.worker for r in replies if r.status == 200)])
    problems = "; ".join(_problem(r) for r in failed)
    if call.op == "rollback":
        fix = f"check GET /v2/admin/models/{call.model}/status on each worker before rolling back again"
    else:
        fix = "repeat the call once the workers named are ready again; repeating it is safe"
    raise WorkersDiverged(
        describe(
            f"{call.op} of model {call.model!r} was applied on worker(s) {', '.join(map(str, applied))} only",
            seen=problems,
            fix=fix,
        )
    )


def _problem(reply: PeerReply) -> str:
    what = "did not answer" if reply.status is None else f"refused it ({reply.status})"
    return f"worker {reply.worker} {what}" + (f": {reply.message}" if reply.message else "")


class Forwarder(Protocol):
    """Sends an admin call that this worker applied to every other worker."""

    @property
    def worker(self) -> int:
        """This worker's index."""

    async def forward(self, call: AdminCall) -> None:
        """Return once every other worker applied ``call``; :class:`WorkersDiverged` otherwise."""

    async def ask(self, call: AdminCall, timeout_s: float) -> Sequence[PeerReply]:
        """Send the read-only ``call`` to every other worker at once and return their replies
        (``status=None`` for a worker that did not answer within ``timeout_s``); never raises."""
