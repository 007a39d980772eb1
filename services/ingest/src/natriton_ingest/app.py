"""Ingest wiring: the public endpoint, cache hits, coalescing, admission, and the reply path to producers.

Ingest owns every request it accepts: it listens on a private reply subject for the answer from
postprocess (or an error from any hop) and answers the producer exactly once — with that answer, or
with ``deadline_exceeded`` when nothing came back in time (even if a downstream copy died).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import Counter
from typing import Any

import msgspec
from nats.aio.msg import Msg
from opentelemetry import trace

from natriton import headers as h
from natriton import subjects
from natriton.cache import ResultCache, cache_key
from natriton.catalog import ModelCatalog, RouteTable
from natriton.errors import ErrorCode, MeshError
from natriton.messages import (
    CacheEntry,
    Codec,
    ErrorReply,
    InferResponse,
    InferTask,
    Job,
    ModelInfo,
    PreprocessTask,
    Reply,
    TensorInput,
)
from natriton.metrics import Metric, counter, gauge
from natriton.pipeline import REPLY_CODEC, error_reply, next_hop_headers
from natriton.runtime import Inbound, ServiceRuntime
from natriton_ingest.logic import Admitted, admit, answer_subject, request_id_of, wants_json
from natriton_ingest.settings import Settings

log = logging.getLogger(__name__)
PREPROCESS_TASKS: Codec[PreprocessTask] = Codec(PreprocessTask)
INFER_TASKS: Codec[InferTask] = Codec(InferTask)
CACHE_ENTRIES: Codec[CacheEntry] = Codec(CacheEntry)


class IngestApp:
    """The front door of the mesh."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        settings: Settings,
        catalog: ModelCatalog,
        routes: RouteTable,
        cache: ResultCache,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.catalog = catalog
        self.routes = routes
        self.cache = cache
        self.reply_subject = subjects.replies_subject(runtime.instance_id)
        self.pending: dict[str, asyncio.Future[bytes]] = {}
        self._sequence = itertools.count()
        """Mesh ids are this copy's unique instance id plus a sequence number (cheaper than a random UUID)."""
        self.pending_per_model: Counter[str] = Counter()
        self.leaders: dict[str, asyncio.Future[Reply]] = {}
        self.counts: Counter[str] = Counter()

    async def start(self) -> None:
        await self.catalog.start(self.runtime.nc)
        await self.routes.start(self.runtime.nc)
        await self.runtime.subscribe(self.reply_subject, self.on_reply)
        self.runtime.stats_extension = self.stats
        self.runtime.metrics_extension = self.metrics
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
        await self.routes.stop()
        await self.cache.close()

    def stats(self) -> dict[str, Any]:
        """Cache, coalescing and admission numbers for ``$SRV.STATS``."""
        return {
            **dict(self.counts),
            "cache_hits": self.cache.hits,
            "cache_misses": self.cache.misses,
            "cache_failures": self.cache.failures,
            "pending": dict(self.pending_per_model),
        }

    def metrics(self) -> list[Metric]:
        """Cache, coalescing and admission metrics for ``/metrics``, from the same numbers as :meth:`stats`."""
        values = [
            ("natriton_ingest_cache_hits", "Cache lookups that found an answer.", self.cache.hits),
            ("natriton_ingest_cache_misses", "Cache lookups that found nothing.", self.cache.misses),
            ("natriton_ingest_cache_failures", "Cache operations that failed (as misses).", self.cache.failures),
            ("natriton_ingest_coalesced", "Requests answered by joining an identical one in flight.",
             self.counts["coalesced"]),
            ("natriton_ingest_overload_rejections", "Requests refused as overloaded (pending or concurrency limit).",
             self.counts["rejected_overloaded"]),
            ("natriton_ingest_late_replies", "Internal replies that came after the deadline.",
             self.counts["late_replies"]),
        ]  # fmt: skip
        metrics: list[Metric] = []
        for name, doc, value in values:
            family = counter(name, doc, [])
            family.add_metric([], value)
            metrics.append(family)
        pending = gauge("natriton_ingest_pending", "Requests in the pipeline per model.", ["model"])
        for model, n in sorted(self.pending_per_model.items()):
            pending.add_metric([model], n)
        metrics.append(pending)
        return metrics

    # ------------------------------------------------------------------ request path
    async def handle(self, inbound: Inbound) -> None:
        """Admit, answer from cache, join an identical request in flight, or send into the pipeline."""
        admitted = admit(
            inbound.data,
            inbound.headers,
            now_ms=h.now_ms(),
            reply_to=self.reply_subject,
            max_payload_bytes=self.settings.max_payload_bytes,
            default_timeout_ms=self.settings.default_timeout_ms,
            max_timeout_ms=self.settings.max_timeout_ms,
            max_top_k=self.settings.max_top_k,
            mesh_id=f"{self.runtime.instance_id}-{next(self._sequence):x}",
        )
        model = admitted.request.model
        try:
            destination = answer_subject(inbound.reply, inbound.headers, model)
            reply, cache_state = await self._answer(admitted)
        except MeshError as exc:
            exc.request_id, exc.model = admitted.request_id, model
            raise
        await self.respond(destination, admitted.request_id, reply, json=admitted.json, cache=cache_state)

    async def _answer(self, admitted: Admitted) -> tuple[Reply, str]:
        request = admitted.request
        span = trace.get_current_span()
        span.set_attribute("natriton.request_id", admitted.request_id)
        span.set_attribute("natriton.mesh_id", admitted.envelope.mesh_id)
        span.set_attribute("natriton.model", request.model)
        info, version = self.catalog.require(request.model, request.version)
        if not request.version:
            version = ""  # the router's routing policy chooses
        key = ""
        if request.use_cache:
            key = cache_key(info.name, self._cache_version(info, version), request.input, request.top_k)
        if key:
            cached = await self.cache.get(key)
            if cached is not None:
                entry = CACHE_ENTRIES.decode(cached)
                span.set_attribute("natriton.cache", "hit")
                self.counts["cache_answers"] += 1
                response = InferResponse(
                    request_id=admitted.request_id,
                    model=info.name,
                    version=entry.version,
                    result=entry.result,
                    cached=True,
                )
                return response, "hit"
            leader = self.leaders.get(key) if self.settings.coalesce else None
            if leader is not None:
                self.counts["coalesced"] += 1
                span.set_attribute("natriton.coalesced", True)
                async with asyncio.timeout(admitted.envelope.remaining_s()):
                    shared = await asyncio.shield(leader)
                return _raise_if_error(msgspec.structs.replace(shared, request_id=admitted.request_id)), "miss"
        job = Job(model=info.name, version=version, task=info.task, top_k=request.top_k, cache_key=key)
        return await self._lead(admitted, key, PreprocessTask(job=job, input=request.input)), "miss"

    def _cache_version(self, info: ModelInfo, version: str) -> str:
        """The version part of the cache key: the named version, or the latest plus the routing policy's
        revision (so a new version or a policy change never serves answers computed under the old one)."""
        return version or f"auto:{info.latest_version}:r{self.routes.revision(info.name)}"

    async def _lead(self, admitted: Admitted, key: str, task: PreprocessTask) -> Reply:
        """Send one request into the pipeline as the leader of any identical ones that arrive meanwhile."""
        model = task.job.model
        if self.pending_per_model[model] >= self.settings.max_pending_per_model:
            self.counts["rejected_overloaded"] += 1
            raise MeshError(
                ErrorCode.OVERLOADED,
                f"{model}: {self.pending_per_model[model]} requests in the pipeline (limit "
                f"{self.settings.max_pending_per_model})",
                retry_after_ms=200,
            )
        shared: asyncio.Future[Reply] | None = None
        if key and self.settings.coalesce:
            shared = asyncio.get_running_loop().create_future()
            self.leaders[key] = shared
        self.pending_per_model[model] += 1
        try:
            reply = await self._through_pipeline(admitted, task)
        except MeshError as exc:
            if shared is not None:  # followers get the same typed error
                shared.set_result(error_reply(admitted.request_id, exc))
            raise
        finally:
            self.pending_per_model[model] -= 1
            if shared is not None:
                self.leaders.pop(key, None)
        if shared is not None:
            shared.set_result(reply)
        return reply

    async def _through_pipeline(self, admitted: Admitted, task: PreprocessTask) -> Reply:
        """Publish the first hop and wait for the one reply (or the deadline).

        Ready-made tensors need no preprocessing: they go straight to the router, which validates them
        against the model anyway (one hop and one copy of the payload fewer).
        """
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        mesh_id = admitted.envelope.mesh_id
        self.pending[mesh_id] = future
        out = next_hop_headers(admitted.envelope)
        try:
            if isinstance(task.input, TensorInput):
                infer = InferTask(job=task.job, inputs=task.input.tensors)
                await self.runtime.publish(subjects.ROUTE, INFER_TASKS.encode(infer), out)
            else:
                await self.runtime.publish(subjects.PREPROCESS, PREPROCESS_TASKS.encode(task), out)
            async with asyncio.timeout(admitted.envelope.remaining_s()):
                data = await future
        except TimeoutError as exc:
            raise MeshError(ErrorCode.DEADLINE_EXCEEDED, "no answer before the deadline") from exc
        finally:
            self.pending.pop(mesh_id, None)
        try:
            reply = REPLY_CODEC.decode(data)
        except msgspec.MsgspecError as exc:
            raise MeshError(ErrorCode.INTERNAL, "an internal reply did not decode") from exc
        return _raise_if_error(reply)

    async def on_reply(self, msg: Msg) -> None:
        """An answer from postprocess (or an error from any hop) for a request this copy owns, by mesh id."""
        future = self.pending.get((msg.headers or {}).get(h.MESH_ID, ""))
        if future is None or future.done():
            self.counts["late_replies"] += 1  # the producer already got deadline_exceeded
            return
        future.set_result(msg.data)

    # ------------------------------------------------------------------ answers
    async def respond(self, subject: str, request_id: str, reply: Reply, *, json: bool, cache: str = "") -> None:
        """Send the one answer for a request to ``subject`` (its inbox or results subject; '' = nowhere)."""
        if not subject:
            self.counts["answers_unaddressed"] += 1  # fire-and-forget without Natriton-Results-To
            return
        out = {h.REQUEST_ID: request_id, h.CONTENT_TYPE: h.JSON if json else h.MSGPACK}
        if cache:
            out[h.CACHE] = cache
        if isinstance(reply, ErrorReply):
            out[h.SERVICE_ERROR] = reply.message
            out[h.SERVICE_ERROR_CODE] = str(reply.code.status)
        await self.runtime.publish(subject, REPLY_CODEC.encode(reply, json=json), out)

    async def reply_error(self, inbound: Inbound, error: MeshError) -> None:
        """``on_error`` of the public endpoint: a typed error reply, where the answer would have gone."""
        try:
            subject = answer_subject(inbound.reply, inbound.headers, error.model)
        except MeshError:
            self.counts["answers_undeliverable"] += 1  # a malformed Natriton-Results-To: nowhere to say so
            return
        request_id = error.request_id
        if not request_id:  # an unexpected failure before the id was known
            with contextlib.suppress(MeshError):
                request_id = request_id_of(inbound.headers)
        await self.respond(subject, request_id, error_reply(request_id, error), json=wants_json(inbound.headers))

    async def reject_overloaded(self, inbound: Inbound) -> None:
        """Every slot is busy: refuse at once rather than queue without bound."""
        self.counts["rejected_overloaded"] += 1
        error = MeshError(ErrorCode.OVERLOADED, "ingest is at its concurrency limit", retry_after_ms=100)
        await self.reply_error(inbound, error)


def _raise_if_error(reply: Reply) -> InferResponse:
    """An error reply from a hop becomes the MeshError it stands for, so the endpoint counts (and answers) it
    as an error; a result passes through."""
    if isinstance(reply, ErrorReply):
        raise MeshError(reply.code, reply.message, retry_after_ms=reply.retry_after_ms)
    return reply


async def build_app(runtime: ServiceRuntime, settings: Settings) -> IngestApp:
    """Dependencies for one ingest process."""
    cache = ResultCache(settings.redis_url, ttl_s=3600)
    return IngestApp(runtime, settings, ModelCatalog(), RouteTable(), cache)
