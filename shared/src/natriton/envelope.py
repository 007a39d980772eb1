"""The request envelope: the routing facts of one accepted request, parsed once per hop and written once.

Ingest creates the envelope when it accepts a request; every internal hop reads it from the NATS headers
(:meth:`Envelope.from_headers`) and writes it to the next hop (:meth:`Envelope.to_headers`). The deadline has
one form (absolute Unix epoch milliseconds) everywhere.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from natriton import headers as h
from natriton.errors import ErrorCode, MeshError, invalid_argument


@dataclass(frozen=True, slots=True)
class Envelope:
    """Who owns a request inside the mesh, what the producer called it, and when it must be answered."""

    mesh_id: str
    """Ingest's own id for the request (unique); replies are correlated on it."""
    request_id: str
    """The producer's id, echoed back untouched (not unique: producers may reuse ids)."""
    deadline_ms: int
    """Absolute deadline, Unix epoch milliseconds."""
    reply_to: str
    """The subject of the ingest copy that owns the request and answers the producer."""
    ack_to: str = ""
    """A frame from a JetStream stream: the subject that acknowledges it once answered ('' for requests)."""

    @classmethod
    def from_headers(cls, headers: dict[str, str]) -> Envelope:
        """Parse the internal headers of a hop; ``invalid_argument`` when a peer sent a malformed envelope."""
        try:
            return cls(
                mesh_id=headers[h.MESH_ID],
                request_id=headers.get(h.REQUEST_ID, ""),
                deadline_ms=int(headers[h.DEADLINE]),
                reply_to=headers[h.REPLY_TO],
                ack_to=headers.get(h.ACK_TO, ""),
            )
        except (KeyError, ValueError) as exc:
            raise invalid_argument(f"internal message without a valid envelope ({exc})") from exc

    @classmethod
    def from_message(cls, headers: dict[str, str], reply: str) -> Envelope:
        """The envelope of a received message; one a JetStream consumer delivered (its reply subject is
        ``$JS.ACK.…``) is acknowledged there once answered."""
        envelope = cls.from_headers(headers)
        if reply.startswith(h.JETSTREAM_ACK_PREFIX) and not envelope.ack_to:
            return dataclasses.replace(envelope, ack_to=reply)
        return envelope

    def to_headers(self) -> dict[str, str]:
        """The envelope as NATS headers for the next hop (add ``traceparent`` with telemetry.inject)."""
        out = {
            h.MESH_ID: self.mesh_id,
            h.REQUEST_ID: self.request_id,
            h.DEADLINE: str(self.deadline_ms),
            h.REPLY_TO: self.reply_to,
        }
        if self.ack_to:
            out[h.ACK_TO] = self.ack_to
        return out

    def remaining_ms(self) -> float:
        """Milliseconds left before the deadline (negative once it has passed)."""
        return self.deadline_ms - time.time() * 1000

    def remaining_s(self) -> float:
        """Seconds left before the deadline, never negative (for ``asyncio.timeout``)."""
        return max(0.0, self.remaining_ms() / 1000)

    def check_deadline(self, where: str) -> None:
        """Raise ``deadline_exceeded`` when the deadline has passed (no point doing the work)."""
        remaining = self.remaining_ms()
        if remaining <= 0:
            raise MeshError(ErrorCode.DEADLINE_EXCEEDED, f"deadline passed {-remaining:.0f} ms before {where}")
