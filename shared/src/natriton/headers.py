"""NATS header names: request id, deadline, reply routing and trace context travel here, not in bodies.

The public names come from :class:`natriton_client.protocol.Header`; the internal ones are defined here.
"""

from __future__ import annotations

import time
from typing import Final

from natriton_client.protocol import JSON, MSGPACK, Header, now_ms

__all__ = ["JSON", "MSGPACK", "now_ms", "remaining_ms"]

REQUEST_ID: Final = Header.REQUEST_ID
TIMEOUT_MS: Final = Header.TIMEOUT_MS
DEADLINE: Final = Header.DEADLINE
RESULTS_TO: Final = Header.RESULTS_TO
CONTENT_TYPE: Final = Header.CONTENT_TYPE
CACHE: Final = Header.CACHE
TRACEPARENT: Final = Header.TRACEPARENT
SERVICE_ERROR: Final = Header.SERVICE_ERROR
SERVICE_ERROR_CODE: Final = Header.SERVICE_ERROR_CODE

REPLY_TO: Final = "Natriton-Reply-To"
"""Internal: the ingest instance's reply subject that owns the request."""
MESH_ID: Final = "Natriton-Mesh-Id"
"""Internal: the id ingest gives every request it accepts; replies are correlated on it (never on the
producer's ``Natriton-Request-Id``, which producers may reuse)."""
ACK_TO: Final = "Natriton-Ack-To"
"""Internal: the JetStream acknowledgement subject of a frame taken from a stream. The hop that sends the frame's
answer to its owner acknowledges it there, so a frame is acknowledged only once it is answered: a copy that dies
with the frame leaves it unacknowledged, and JetStream delivers it again."""
JETSTREAM_ACK_PREFIX: Final = "$JS.ACK."
"""The reply subject of a message delivered by a JetStream consumer (publishing to it acknowledges the message)."""


def remaining_ms(headers: dict[str, str] | None) -> float | None:
    """Milliseconds left before the deadline in ``headers`` (negative when passed); None without one."""
    if not headers or DEADLINE not in headers:
        return None
    try:
        return int(headers[DEADLINE]) - time.time() * 1000
    except ValueError:
        return None
