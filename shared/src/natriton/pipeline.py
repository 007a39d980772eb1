"""Helpers every hop of the pipeline uses: forward headers, check deadlines, answer the owning ingest."""

from __future__ import annotations

from typing import Final, TypeVar

import msgspec

from natriton import headers as h
from natriton import subjects
from natriton.errors import ErrorCode, MeshError, invalid_argument
from natriton.messages import Codec, ErrorReply, Reply
from natriton.runtime import Handler, Inbound, ServiceRuntime
from natriton.telemetry import inject

ROUTING_HEADERS: Final[tuple[str, ...]] = (h.REQUEST_ID, h.DEADLINE, h.REPLY_TO)
REPLY_CODEC: Final[Codec[Reply]] = Codec(Reply)


T = TypeVar("T")


def decode_task(codec: Codec[T], inbound: Inbound) -> T:
    """Decode an internal message; a malformed one is an ``invalid_argument`` error for its owner."""
    try:
        return codec.decode(inbound.data)
    except msgspec.MsgspecError as exc:
        raise invalid_argument(f"malformed message on {inbound.subject}: {exc}") from exc


def next_hop_headers(incoming: dict[str, str]) -> dict[str, str]:
    """Headers for the next hop: the request's routing headers plus the current span as ``traceparent``."""
    out: dict[str, str] = {name: incoming[name] for name in ROUTING_HEADERS if name in incoming}
    inject(out)
    return out


def check_deadline(headers: dict[str, str], where: str) -> None:
    """Raise ``deadline_exceeded`` when the request's deadline has passed (no point doing the work)."""
    remaining = h.remaining_ms(headers)
    if remaining is not None and remaining <= 0:
        raise MeshError(ErrorCode.DEADLINE_EXCEEDED, f"deadline passed {-remaining:.0f} ms before {where}")


def error_reply(request_id: str, error: MeshError) -> ErrorReply:
    """The wire form of a typed error."""
    return ErrorReply(
        request_id=request_id, code=error.code, message=error.message, retry_after_ms=error.retry_after_ms
    )


async def reply_to_owner(runtime: ServiceRuntime, incoming: dict[str, str], reply: Reply) -> None:
    """Send a result or error to the ingest instance that accepted the request (``Natriton-Reply-To``)."""
    owner = incoming.get(h.REPLY_TO)
    if not owner:
        return  # not a mesh request (e.g. a stray message); nobody waits for it
    out = next_hop_headers(incoming)
    await runtime.publish(owner, REPLY_CODEC.encode(reply), out)


async def reply_error_to_owner(runtime: ServiceRuntime, inbound: Inbound, error: MeshError) -> None:
    """The ``on_error`` handler of every internal endpoint."""
    request_id = error.request_id or inbound.headers.get(h.REQUEST_ID, "")
    await reply_to_owner(runtime, inbound.headers, error_reply(request_id, error))


async def serve_stage(runtime: ServiceRuntime, stage: str, subject: str, handler: Handler) -> None:
    """Serve one internal pipeline stage in its queue group; typed errors go back to the owning ingest."""

    async def on_error(inbound: Inbound, error: MeshError) -> None:
        await reply_error_to_owner(runtime, inbound, error)

    await runtime.add_endpoint(
        stage, subject, handler, queue_group=subjects.queue_group(runtime.name), on_error=on_error
    )
