"""Helpers every hop of the pipeline uses: decode a task and its envelope, forward, answer the owning ingest."""

from __future__ import annotations

from typing import Final, TypeVar

import msgspec

from natriton import deadletters, subjects
from natriton.answers import to_result
from natriton.cache import ResultCache
from natriton.envelope import Envelope
from natriton.errors import MeshError, invalid_argument
from natriton.handoff import Taken
from natriton.headers import JETSTREAM_ACK_PREFIX
from natriton.messages import CacheEntry, Codec, ErrorReply, InferResponse, InferTask, Job, ModelInfo, Reply, Tensor
from natriton.runtime import Handler, Inbound, ServiceRuntime
from natriton.telemetry import inject

REPLY_CODEC: Final[Codec[Reply]] = Codec(Reply)

T = TypeVar("T")


def decode_task(codec: Codec[T], inbound: Inbound) -> tuple[T, Envelope]:
    """Decode an internal message and its envelope; a malformed one is ``invalid_argument`` for its owner."""
    envelope = Envelope.from_message(inbound.headers, inbound.reply)
    try:
        return codec.decode(inbound.data), envelope
    except msgspec.MsgspecError as exc:
        raise invalid_argument(f"malformed message on {inbound.subject}: {exc}") from exc


def next_hop_headers(envelope: Envelope) -> dict[str, str]:
    """Headers for the next hop: the envelope plus the current span as ``traceparent``."""
    out = envelope.to_headers()
    inject(out)
    return out


def infer_task(job: Job, inputs: tuple[Tensor, ...], handed: Taken | None) -> InferTask:
    """The router's task: ``inputs`` inline, or (``handed``) their bytes in the sender's shared memory."""
    if handed is None:
        return InferTask(job=job, inputs=inputs)
    emptied = tuple(msgspec.structs.replace(t, data=b"") for t in inputs)
    return InferTask(job=job, inputs=emptied, handoff=handed.ref)


def error_reply(request_id: str, error: MeshError) -> ErrorReply:
    """The wire form of a typed error."""
    return ErrorReply(
        request_id=request_id, code=error.code, message=error.message, retry_after_ms=error.retry_after_ms
    )


async def reply_to_owner(
    runtime: ServiceRuntime, envelope: Envelope, reply: Reply, *, original: Inbound | None = None
) -> None:
    """Send a result or error to the ingest copy that accepted the request; then, for a frame from a stream, settle
    it: an answer acknowledges it (JetStream need not deliver it again); an error is settled by
    :func:`natriton.deadletters.settle_failure`: a permanent one (or a transient one on the last delivery) goes to
    dead letters and is terminated, a transient one with deliveries left is delivered again after a delay and the
    owner is not answered yet (that delivery answers it). ``original``: the message as taken from the stream, when
    this hop took it (else the dead letter reads it from the stream)."""
    if envelope.ack_to and isinstance(reply, ErrorReply):
        settled = await deadletters.settle_failure(
            runtime.nc,
            envelope.ack_to,
            reply.code,
            reply.message,
            retry_after_ms=reply.retry_after_ms,
            original=deadletters.original_of(original) if original is not None else None,
            writer=f"{runtime.name}/{runtime.instance_id}",
        )
        if settled is not deadletters.Settlement.RETRY:
            await runtime.publish(envelope.reply_to, REPLY_CODEC.encode(reply), next_hop_headers(envelope))
        return
    if not envelope.ack_to:  # packed with the other answers for the same ingest copy in this turn
        runtime.publish_soon(envelope.reply_to, REPLY_CODEC.encode(reply), next_hop_headers(envelope))
        return
    await runtime.publish(envelope.reply_to, REPLY_CODEC.encode(reply), next_hop_headers(envelope))
    await runtime.publish(envelope.ack_to, b"")


async def reply_error_to_owner(runtime: ServiceRuntime, inbound: Inbound, error: MeshError) -> None:
    """The ``on_error`` handler of every internal endpoint (a message without an envelope has no owner; one taken
    from a stream goes to dead letters, so that it is not delivered forever)."""
    try:
        envelope = Envelope.from_message(inbound.headers, inbound.reply)
    except MeshError as exc:
        if inbound.reply.startswith(JETSTREAM_ACK_PREFIX):  # no owner to answer, but a stream message to settle
            await deadletters.settle_failure(
                runtime.nc,
                inbound.reply,
                exc.code,  # invalid_argument: every delivery would fail the same way
                exc.message,
                original=deadletters.original_of(inbound),
                writer=f"{runtime.name}/{runtime.instance_id}",
            )
        return  # not a mesh request (a stray message): nobody waits for it
    original = inbound if inbound.reply and inbound.reply == envelope.ack_to else None
    await reply_to_owner(runtime, envelope, error_reply(envelope.request_id, error), original=original)


async def serve_stage(runtime: ServiceRuntime, stage: str, subject: str, handler: Handler) -> None:
    """Serve one internal pipeline stage in its queue group; typed errors go back to the owning ingest."""

    async def on_error(inbound: Inbound, error: MeshError) -> None:
        await reply_error_to_owner(runtime, inbound, error)

    await runtime.add_endpoint(
        stage, subject, handler, queue_group=subjects.queue_group(runtime.name), on_error=on_error, packed=True
    )


CACHE_ENTRIES: Final[Codec[CacheEntry]] = Codec(CacheEntry)


async def answer(
    runtime: ServiceRuntime,
    cache: ResultCache,
    info: ModelInfo,
    job: Job,
    outputs: tuple[Tensor, ...],
    envelope: Envelope,
    *,
    cache_ttl_s: int,
) -> None:
    """The last step of a request, in postprocess or (``job.router_answers``) in the router: the model's outputs
    → the answer (:func:`natriton.answers.to_result`), written to the cache under the job's key before the reply
    goes (so the next identical request finds it), then sent to the owner. ``cache_ttl_s``: unless the model sets
    its own."""
    result = to_result(info, outputs, job)
    if job.cache_key:
        ttl_s = cache_ttl_s if info.cache_ttl_s is None else info.cache_ttl_s
        await cache.set(job.cache_key, CACHE_ENTRIES.encode(CacheEntry(version=job.version, result=result)), ttl_s)
    response = InferResponse(request_id=envelope.request_id, model=job.model, version=job.version, result=result)
    await reply_to_owner(runtime, envelope, response)
