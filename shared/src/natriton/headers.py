"""NATS header names: request id, deadline, reply routing and trace context travel here, not in bodies."""

from __future__ import annotations

import time
from typing import Final

REQUEST_ID: Final = "Natriton-Request-Id"
"""Set by ingest (or kept when the producer sends one); echoed in the reply."""

TIMEOUT_MS: Final = "Natriton-Timeout-Ms"
"""Producer's relative budget in milliseconds (optional)."""

DEADLINE: Final = "Natriton-Deadline"
"""Absolute deadline, Unix epoch milliseconds. Producers may send it instead of a timeout."""

REPLY_TO: Final = "Natriton-Reply-To"
"""Internal: the ingest instance's reply subject that owns the request."""

CONTENT_TYPE: Final = "Content-Type"
"""``application/msgpack`` (default) or ``application/json``; the reply uses the request's encoding."""

CACHE: Final = "Natriton-Cache"
"""On replies: ``hit`` when answered from the result cache, ``miss`` otherwise."""

TRACEPARENT: Final = "traceparent"
SERVICE_ERROR: Final = "Nats-Service-Error"
SERVICE_ERROR_CODE: Final = "Nats-Service-Error-Code"

JSON: Final = "application/json"
MSGPACK: Final = "application/msgpack"


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds (deadlines are absolute so they survive hops)."""
    return int(time.time() * 1000)


def remaining_ms(headers: dict[str, str] | None) -> float | None:
    """Milliseconds left before the deadline in ``headers`` (negative when passed); None without one."""
    if not headers or DEADLINE not in headers:
        return None
    try:
        return int(headers[DEADLINE]) - time.time() * 1000
    except ValueError:
        return None
