"""What a client is told when a request fails.

kiln's own errors carry messages written for users (what was wrong, the value seen, the fix) and
go out as they are. Engine failures and anything unexpected are internal: the client gets a short
message with an error id, and the details (library messages, stack traces) go to the server log.
"""

from __future__ import annotations

import logging
import uuid

from kiln.errors import EngineDead, EngineFailed, KilnError

log = logging.getLogger("kiln.server")


def client_message(error: BaseException) -> str:
    """The message a client sees for ``error``; internals are logged under an error id instead."""
    if isinstance(error, EngineFailed | EngineDead):
        error_id = uuid.uuid4().hex[:12]
        log.error("request failed in the engine (error id %s): %s: %s", error_id, type(error).__name__, error)
        return f"the model's engine failed to run this request (error id {error_id}); retry later"
    if isinstance(error, KilnError):
        return str(error)
    error_id = uuid.uuid4().hex[:12]
    log.error("internal error (error id %s)", error_id, exc_info=error)
    return f"internal server error (error id {error_id}); the details are in the server log"
