"""Ingest wiring: the public endpoint, cache hits, and the reply path back to producers.

Ingest owns every request it accepts: it listens on a private reply subject for the answer from
postprocess (or an error from any hop) and answers the producer exactly once — with that answer, or
with ``deadline_exceeded`` when nothing came back in time (even if a downstream copy died).
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from nats.aio.msg import Msg
from opentelemetry import trace

from natriton import headers as h
from natriton import subjects
from natriton.cache import ResultCache, cache_key
from natriton.catalog import ModelCatalog
from natriton.errors import ErrorCode, MeshError
from natriton.messages import Codec, ErrorReply, InferResponse, Job, PreprocessTask, Reply, Result
from natriton.pipeline import REPLY_CODEC, error_reply
from natriton.runtime import Inbound, ServiceRuntime
from natriton.telemetry import inject
from natriton_ingest.logic import Admitted, admit, wants_json
from natriton_ingest.settings import Settings

log = logging.getLogger(__name__)
TASKS: Codec[PreprocessTask] = Codec(PreprocessTask)
RESULTS: Codec[Result] = Codec(Result)


class IngestApp:
    """The front door of the mesh."""

    def __init__(self, runtime: ServiceRuntime, settings: Settings, catalog: ModelCatalog, cache: ResultCache) -> None:
        self.runtime = runtime
        self.settings = settings
        self.catalog = catalog
        self.cache = cache
        self.reply_subject = subjects.replies_subject(runtime.instance_id)
        self.pending: dict[str, asyncio.Future[bytes]] = {}
        self.late_replies = 0

    async def start(self) -> None:
        await self.catalog.start(self.runtime.nc)
        await self.runtime.subscribe(self.reply_subject, self.on_reply)
        await self.runtime.add_endpoint(
            "infer",
            subjects.INFER,
            self.handle,
            queue_group=subjects.queue_group("ingest"),
            on_error=self.reply_error,
            on_overload=self.reject_overloaded,
        )

    async def stop(self) -> None:
        await self.catalog.stop()
        await self.cache.close()

    # ------------------------------------------------------------------ request path
    async def handle(self, inbound: Inbound) -> None:
        """Admit, answer from cache, or send into the pipeline and wait for the answer."""
        admitted = admit(
            inbound.data,
            inbound.headers,
            now_ms=h.now_ms(),
            max_payload_bytes=self.settings.max_payload_bytes,
            default_timeout_ms=self.settings.default_timeout_ms,
            max_timeout_ms=self.settings.max_timeout_ms,
            max_top_k=self.settings.max_top_k,
        )
        try:
            await self._serve(inbound, admitted)
        except MeshError as exc:
            exc.request_id = admitted.request_id
            raise

    async def _serve(self, inbound: Inbound, admitted: Admitted) -> None:
        request = admitted.request
        span = trace.get_current_span()
        span.set_attribute("natriton.request_id", admitted.request_id)
        span.set_attribute("natriton.model", request.model)
        info, version = self.catalog.require(request.model, request.version)
        key = cache_key(info.name, version, request.input, request.top_k) if request.use_cache else ""
        if key:
            cached = await self.cache.get(key)
            if cached is not None:
                span.set_attribute("natriton.cache", "hit")
                response = InferResponse(
                    request_id=admitted.request_id,
                    model=info.name,
                    version=version,
                    result=RESULTS.decode(cached),
                    cached=True,
                )
                await self.respond(inbound, admitted.request_id, response, json=admitted.json, cache="hit")
                return
        job = Job(model=info.name, version=version, task=info.task, top_k=request.top_k, cache_key=key)
        reply = await self._through_pipeline(admitted, PreprocessTask(job=job, input=request.input))
        await self.respond(inbound, admitted.request_id, reply, json=admitted.json, cache="miss")

    async def _through_pipeline(self, admitted: Admitted, task: PreprocessTask) -> Reply:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending[admitted.request_id] = future
        out = {h.REQUEST_ID: admitted.request_id, h.DEADLINE: str(admitted.deadline_ms), h.REPLY_TO: self.reply_subject}
        inject(out)
        try:
            await self.runtime.publish(subjects.PREPROCESS, TASKS.encode(task), out)
            budget_s = max(0.0, (admitted.deadline_ms - h.now_ms()) / 1000)
            async with asyncio.timeout(budget_s):
                data = await future
        except TimeoutError as exc:
            raise MeshError(ErrorCode.DEADLINE_EXCEEDED, "no answer before the deadline") from exc
        finally:
            self.pending.pop(admitted.request_id, None)
        try:
            return REPLY_CODEC.decode(data)
        except msgspec.MsgspecError as exc:
            raise MeshError(ErrorCode.INTERNAL, "an internal reply did not decode") from exc

    async def on_reply(self, msg: Msg) -> None:
        """An answer from postprocess (or an error from any hop) for a request this instance owns."""
        request_id = (msg.headers or {}).get(h.REQUEST_ID, "")
        future = self.pending.get(request_id)
        if future is None or future.done():
            self.late_replies += 1  # the producer already got deadline_exceeded
            return
        future.set_result(msg.data)

    # ------------------------------------------------------------------ answers
    async def respond(self, inbound: Inbound, request_id: str, reply: Reply, *, json: bool, cache: str = "") -> None:
        """Send the one answer for this request: to its reply inbox, or to the results subject."""
        out = {h.REQUEST_ID: request_id, h.CONTENT_TYPE: h.JSON if json else h.MSGPACK}
        if cache:
            out[h.CACHE] = cache
        if isinstance(reply, ErrorReply):
            out[h.SERVICE_ERROR] = reply.message
            out[h.SERVICE_ERROR_CODE] = str(reply.code.status)
        model = reply.model if isinstance(reply, InferResponse) else "_errors"
        subject = inbound.reply or subjects.results_subject(model)
        await self.runtime.publish(subject, REPLY_CODEC.encode(reply, json=json), out)

    async def reply_error(self, inbound: Inbound, error: MeshError) -> None:
        """``on_error`` of the public endpoint: a typed error reply."""
        request_id = error.request_id or inbound.headers.get(h.REQUEST_ID, "")
        await self.respond(inbound, request_id, error_reply(request_id, error), json=wants_json(inbound.headers))

    async def reject_overloaded(self, inbound: Inbound) -> None:
        """Every slot is busy: refuse at once rather than queue without bound."""
        error = MeshError(ErrorCode.OVERLOADED, "ingest is at its concurrency limit", retry_after_ms=100)
        await self.reply_error(inbound, error)


async def build_app(runtime: ServiceRuntime, settings: Settings) -> IngestApp:
    """Dependencies for one ingest process."""
    cache = ResultCache(settings.redis_url, ttl_s=3600)
    return IngestApp(runtime, settings, ModelCatalog(), cache)
