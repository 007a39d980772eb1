"""Helpers every hop of the pipeline uses: decode a task and its envelope, forward, answer the owning ingest."""

from __future__ import annotations

from typing import Final, TypeVar

import msgspec

from natriton import subjects
from natriton.envelope import Envelope
from natriton.errors import MeshError, invalid_argument
from natriton.messages import Codec, ErrorReply, Reply
from natriton.runtime import Handler, Inbound, ServiceRuntime
from natriton.telemetry import inject

REPLY_CODEC: Final[Codec[Reply]] = Codec(Reply)

T = TypeVar("T")


def decode_task(codec: Codec[T], inbound: Inbound) -> tuple[T, Envelope]:
    """Decode an internal message and its envelope; a malformed one is ``invalid_argument`` for its owner."""
    envelope = Envelope.from_headers(inbound.headers)
    try:
        return codec.decode(inbound.data), envelope
    except msgspec.MsgspecError as exc:
        raise invalid_argument(f"malformed message on {inbound.subject}: {exc}") from exc


def next_hop_headers(envelope: Envelope) -> dict[str, str]:
    """Headers for the next hop: the envelope plus the current span as ``traceparent``."""
    out = envelope.to_headers()
    inject(out)
    return out


def error_reply(request_id: str, error: MeshError) -> ErrorReply:
    """The wire form of a typed error."""
    return ErrorReply(
        request_id=request_id, code=error.code, message=error.message, retry_after_ms=error.retry_after_ms
    )


async def reply_to_owner(runtime: ServiceRuntime, envelope: Envelope, reply: Reply) -> None:
    """Send a result or error to the ingest copy that accepted the request."""
    await runtime.publish(envelope.reply_to, REPLY_CODEC.encode(reply), next_hop_headers(envelope))


async def reply_error_to_owner(runtime: ServiceRuntime, inbound: Inbound, error: MeshError) -> None:
    """The ``on_error`` handler of every internal endpoint (a message without an envelope has no owner)."""
    try:
        envelope = Envelope.from_headers(inbound.headers)
    except MeshError:
        return  # not a mesh request (a stray message): nobody waits for it
    await reply_to_owner(runtime, envelope, error_reply(envelope.request_id, error))


async def serve_stage(runtime: ServiceRuntime, stage: str, subject: str, handler: Handler) -> None:
    """Serve one internal pipeline stage in its queue group; typed errors go back to the owning ingest."""

    async def on_error(inbound: Inbound, error: MeshError) -> None:
        await reply_error_to_owner(runtime, inbound, error)

    await runtime.add_endpoint(
        stage, subject, handler, queue_group=subjects.queue_group(runtime.name), on_error=on_error
    )
