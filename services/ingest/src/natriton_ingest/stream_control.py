"""Camera control: ingest's endpoint ``natriton.v1.control.streams`` (request/reply, every copy in one queue group).

``add`` validates a :class:`~natriton.messages.StreamSource` and writes it to the KV bucket ``natriton_streams``
(replacing the camera's previous source), ``remove`` deletes it, ``list`` returns every camera with the status its
owner last wrote. The copies that read cameras follow the bucket, so a change takes effect at once, with no
restarts. ``natriton stream add|ls|rm`` and ``nats req natriton.v1.control.streams '{"type":"stream_control",...}'``
use it.
"""

from __future__ import annotations

import logging
from typing import Final

import msgspec

from natriton import subjects
from natriton.control import decode_request, is_json, respond
from natriton.errors import ErrorCode, MeshError, invalid_argument
from natriton.messages import (
    Codec,
    StreamControl,
    StreamControlAnswer,
    StreamControlReply,
    StreamInfo,
    StreamSource,
)
from natriton.pipeline import error_reply
from natriton.runtime import Inbound, ServiceRuntime
from natriton.settings import redact
from natriton.streams import StreamRegistry, validate_source

log = logging.getLogger(__name__)
REQUESTS: Final[Codec[StreamControl]] = Codec(StreamControl)
ANSWERS: Final[Codec[StreamControlAnswer]] = Codec(StreamControlAnswer)


def masked(source: StreamSource) -> StreamSource:
    """``source`` with any credentials in its URL masked (``rtsp://***@camera/``): what listings and logs show."""
    return msgspec.structs.replace(source, url=redact("url", source.url))


def describe_source(source: StreamSource) -> str:
    """One line for the operator (credentials masked)."""
    return f"{source.camera}: {masked(source).url} ({source.mode.value}, model {source.model})"


class StreamControlEndpoint:
    """Serves ``natriton.v1.control.streams`` for one ingest copy."""

    def __init__(self, runtime: ServiceRuntime, registry: StreamRegistry) -> None:
        self.runtime = runtime
        self.registry = registry

    async def start(self) -> None:
        await self.runtime.add_endpoint(
            "control_streams",
            subjects.CONTROL_STREAMS,
            self.handle,
            queue_group=subjects.queue_group(self.runtime.name),
            on_error=self.reply_error,
            max_concurrency=4,
        )

    async def handle(self, inbound: Inbound) -> None:
        request, json_form = decode_request(REQUESTS, inbound.data, "stream-control")
        reply = await self.answer(request)
        await respond(self.runtime, inbound.reply, ANSWERS, reply, json_form)

    async def answer(self, request: StreamControl) -> StreamControlReply:
        """Carry out one control request."""
        if request.action == "add":
            if request.source is None:
                raise invalid_argument("add needs a source")
            source = validate_source(request.source)
            replaced = await self.registry.get_source(source.camera) is not None
            await self.registry.put_source(source)
            log.info("stream control: %s %s", "replaced" if replaced else "added", describe_source(source))
            message = f"camera {source.camera} {'replaced' if replaced else 'added'}"
            return StreamControlReply(action="add", message=message, streams=(StreamInfo(source=masked(source)),))
        if request.action == "remove":
            source_or_none = await self.registry.get_source(request.camera)
            if source_or_none is None or not await self.registry.remove_source(request.camera):
                raise MeshError(ErrorCode.NOT_FOUND, f"no camera {request.camera[:64]!r}")
            await self.registry.remove_status(request.camera)
            log.info("stream control: removed %s", describe_source(source_or_none))
            return StreamControlReply(
                action="remove",
                message=f"camera {request.camera} removed",
                streams=(StreamInfo(source=masked(source_or_none)),),
            )
        streams = tuple(
            [
                StreamInfo(source=masked(source), status=await self.registry.get_status(source.camera))
                for source in await self.registry.list_sources()
            ]
        )
        return StreamControlReply(action="list", message=f"{len(streams)} cameras", streams=streams)

    async def reply_error(self, inbound: Inbound, error: MeshError) -> None:
        """``on_error``: a typed error reply with the NATS micro error headers."""
        await respond(self.runtime, inbound.reply, ANSWERS, error_reply("", error), is_json(inbound.data))
