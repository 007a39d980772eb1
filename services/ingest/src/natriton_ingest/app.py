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
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
from nats.aio.msg import Msg
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from opentelemetry import trace

from natriton import headers as h
from natriton import subjects, wirebatch
from natriton.cache import NearCache, ResultCache, cache_key
from natriton.catalog import ModelCatalog, RouteTable
from natriton.claimcheck import FrameStore, frame_key
from natriton.envelope import Envelope
from natriton.errors import ErrorCode, MeshError, invalid_argument
from natriton.frames import ensure_stream
from natriton.handoff import Sender, Taken
from natriton.messages import (
    AudioInput,
    CacheEntry,
    Codec,
    ErrorReply,
    FrameRef,
    FrameTask,
    ImageInput,
    InferRequest,
    InferResponse,
    InferTask,
    Job,
    ModelInfo,
    PreprocessTask,
    RawOutputs,
    Reply,
    TensorInput,
)
from natriton.metrics import Metric, counter, gauge
from natriton.pipeline import CACHE_ENTRIES, REPLY_CODEC, error_reply, infer_task, next_hop_headers
from natriton.profiles import DetectorProfile, VadProfile, audio_only
from natriton.runtime import Inbound, ServiceRuntime
from natriton.streams import open_registry
from natriton.tensors import to_array, to_tensor
from natriton_client.liveness import HeartbeatWatch, Peer
from natriton_client.protocol import INGEST_HEARTBEAT_SUBJECT, FrameResult, is_subject_token, one_line
from natriton_ingest.audio_streams import AudioStreams
from natriton_ingest.cameras import CameraContext, CameraLimits, CameraManager, CameraWorker
from natriton_ingest.live import LiveView
from natriton_ingest.logic import Admitted, admit, answer_subject, request_id_of, wants_json
from natriton_ingest.settings import Settings
from natriton_ingest.stream_control import StreamControlEndpoint
from natriton_ingest.tenants import AuditRecord, Tenant, TenantGate, parse_limits, scoped_cache_key, tenant_of

log = logging.getLogger(__name__)
PREPROCESS_TASKS: Codec[PreprocessTask] = Codec(PreprocessTask)
INFER_TASKS: Codec[InferTask] = Codec(InferTask)
FRAME_TASKS: Codec[FrameTask] = Codec(FrameTask)
AUDIT_RECORDS = msgspec.json.Encoder()
IMAGE_PATH: tuple[str, ...] = ("preprocess", "router", "postprocess")
TENSOR_PATH: tuple[str, ...] = ("router", "postprocess")
"""The stages a request passes (ready-made tensors skip preprocess; a job the router answers skips postprocess)."""


def stages_of(task: PreprocessTask) -> tuple[str, ...]:
    """The stages ``task`` passes on its way to the answer."""
    path = TENSOR_PATH if isinstance(task.input, TensorInput) else IMAGE_PATH
    return tuple(s for s in path if s != "postprocess") if task.job.router_answers else path


@dataclass(slots=True)
class InFlight:
    """A request this copy sent into the pipeline and waits for: enough to send it again."""

    future: asyncio.Future[bytes]
    subject: str
    payload: bytes
    headers: dict[str, str]
    stages: tuple[str, ...]
    sent_at_s: float
    """``time.monotonic()`` of the latest send."""
    resends: int = 0


class IngestApp:
    """The front door of the mesh."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        settings: Settings,
        catalog: ModelCatalog,
        routes: RouteTable,
        cache: ResultCache,
        frames: FrameStore,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.catalog = catalog
        self.routes = routes
        self.cache = cache
        self.near: NearCache[CacheEntry] = NearCache(settings.near_cache_ttl_s, settings.near_cache_entries)
        """Recent answers kept in memory: a hit on them needs no Redis round trip."""
        self.reply_subject = subjects.replies_subject(runtime.instance_id)
        self.pending: dict[str, asyncio.Future[bytes]] = {}
        self.in_flight: dict[str, InFlight] = {}
        """Requests (not camera frames: JetStream delivers those again) in the pipeline, by mesh id."""
        self.stages = HeartbeatWatch(
            subjects.STAGE_HEARTBEATS,
            on_lost=self.on_copies_lost,
            on_reconnected=self.on_reconnected,
            on_last_left=self.on_last_copy_left,
            settle_s=settings.heartbeat_dead_after_s,
        )
        """Which copies of preprocess, router and postprocess are alive (their heartbeats)."""
        self.copies_lost: Counter[str] = Counter()
        self.ingest_copies = HeartbeatWatch(INGEST_HEARTBEAT_SUBJECT, on_lost=lambda dead: None)
        """Which ingest copies are alive (this one too), and for how long: live audio streams are shared out among
        those that have settled."""
        self.audio = AudioStreams(
            runtime,
            lambda model: self.catalog.require(model, "")[0],
            self.run_audio_chunks,
            self.audio_owners,
            idle_s=settings.audio_idle_s,
            max_bytes=settings.max_payload_bytes,
            max_duration_s=settings.audio_piece_max_s,
            max_streams=settings.audio_max_streams,
        )
        """The live audio streams this copy owns (:mod:`natriton_ingest.audio_streams`)."""
        self.handoff = Sender(
            lambda: self.stages.shares_memory("router", runtime.shm_domain), settings.handoff_min_bytes
        )
        """Ready-made tensors on their way to the router, through this copy's shared memory (decision 0011)."""
        self.tenants = TenantGate(parse_limits(settings.tenant_limits))
        self._sequence = itertools.count()
        """Mesh ids are this copy's unique instance id plus a sequence number (cheaper than a random UUID)."""
        self.pending_per_model: Counter[str] = Counter()
        self.leaders: dict[str, asyncio.Future[Reply]] = {}
        self.counts: Counter[str] = Counter()
        self.frames = frames
        self.cameras: CameraManager | None = None
        self.live = LiveView.from_settings(self.camera_workers, settings, owner=runtime.instance_id)
        """The live page (``/streams`` on the metrics port)."""
        self.live.audio_streams = self.audio.views
        self.on_frame: Callable[[str, FrameResult, npt.NDArray[np.uint8]], None] | None = self.live.on_frame
        """Called with each camera result and its frame (the live page hooks in here)."""

    async def start(self) -> None:
        self.handoff.open(self.runtime.micro.id, self.runtime.shm_domain, self.settings.handoff_max_bytes)
        await self.stages.start(self.runtime.nc)
        await self.ingest_copies.start(self.runtime.nc)
        self.runtime.spawn(self._refuse_stranded_once_settled())
        if self.settings.audit:
            await ensure_stream(self.runtime.nc.jetstream(), self.audit_stream_config(), self.settings.audit_replicas)
        await self.catalog.start(self.runtime.nc)
        await self.routes.start(self.runtime.nc)
        await self.audio.start()
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
        self.runtime.http_routes.update(self.live.routes())
        await self.live.start()  # sweeps the recordings now, then hourly
        registry = await open_registry(self.runtime.nc, lease_ttl_s=self.settings.camera_lease_ttl_s)
        await StreamControlEndpoint(self.runtime, registry).start()
        if self.settings.max_cameras > 0:
            self.cameras = CameraManager(
                self.runtime,
                registry,
                self.camera_context(),
                max_cameras=self.settings.max_cameras,
                lease_ttl_s=self.settings.camera_lease_ttl_s,
                page_url=f"{base}/streams" if (base := self.settings.public_base_url()) else "",
            )
            await self.cameras.start()

    def camera_context(self) -> CameraContext:
        """What this copy's camera workers use: the frame store, and the reply path requests use."""
        settings = self.settings
        limits = CameraLimits(
            realtime_in_flight=settings.realtime_frames_in_flight,
            reliable_in_flight=settings.reliable_frames_in_flight,
            realtime_deadline_s=settings.realtime_frame_deadline_s,
            reliable_deadline_s=settings.reliable_frame_deadline_s,
        )
        return CameraContext(
            self.runtime,
            self.frames,
            self.reply_subject,
            self.new_mesh_id,
            self.expect_reply,
            self.forget_reply,
            REPLY_CODEC.decode,
            limits,
            on_frame=self.on_frame,
        )

    def camera_workers(self) -> dict[str, CameraWorker]:
        """The cameras this copy reads now."""
        return self.cameras.workers if self.cameras is not None else {}

    def new_mesh_id(self) -> str:
        """A mesh id unique to this request: this copy's instance id and a sequence number."""
        return f"{self.runtime.instance_id}-{next(self._sequence):x}"

    def expect_reply(self, mesh_id: str) -> asyncio.Future[bytes]:
        """A future the answer for ``mesh_id`` will complete (see :meth:`on_reply`)."""
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending[mesh_id] = future
        return future

    def forget_reply(self, mesh_id: str) -> None:
        """Stop waiting for ``mesh_id`` (an answer that still comes counts as late)."""
        self.pending.pop(mesh_id, None)

    async def stop(self) -> None:
        await self.audio.stop()
        await self.ingest_copies.stop()
        await self.live.close()  # recordings keep what they have
        if self.cameras is not None:
            await self.cameras.stop()
        await self.frames.close()
        await self.stages.stop()
        await self.catalog.stop()
        await self.routes.stop()
        await self.cache.close()
        self.handoff.close()

    def stats(self) -> dict[str, Any]:
        """Cache, coalescing and admission numbers for ``$SRV.STATS``."""
        return {
            **dict(self.counts),
            "cache_hits": self.cache.hits + self.near.hits,
            "cache_misses": self.cache.misses,
            "cache_failures": self.cache.failures,
            "near_cache_hits": self.near.hits,
            "near_cache_entries": len(self.near),
            "pending": dict(self.pending_per_model),
            "handoff": self.handoff.stats(),
        }

    def metrics(self) -> list[Metric]:
        """Cache, coalescing and admission metrics for ``/metrics``, from the same numbers as :meth:`stats`."""
        values = [
            ("natriton_ingest_cache_hits", "Cache lookups that found an answer (in memory or in Redis).",
             self.cache.hits + self.near.hits),
            ("natriton_ingest_near_cache_hits", "Cache hits answered from this copy's memory (no Redis round trip).",
             self.near.hits),
            ("natriton_ingest_cache_misses", "Cache lookups that found nothing.", self.cache.misses),
            ("natriton_ingest_cache_failures", "Cache operations that failed (as misses).", self.cache.failures),
            ("natriton_ingest_coalesced", "Requests answered by joining an identical one in flight.",
             self.counts["coalesced"]),
            ("natriton_ingest_overload_rejections", "Requests refused as overloaded (pending or concurrency limit).",
             self.counts["rejected_overloaded"]),
            ("natriton_ingest_late_replies", "Internal replies that came after the deadline (or a second answer to a "
             "request sent again).", self.counts["late_replies"]),
            ("natriton_ingest_resent", "Requests sent into the pipeline again (a copy died, or NATS reconnected).",
             self.counts["resent"]),
            ("natriton_ingest_refused_no_copy", "Requests answered unavailable at once: a stage had no live copy.",
             self.counts["refused_no_copy"]),
        ]  # fmt: skip
        metrics: list[Metric] = []
        for name, doc, value in values:
            family = counter(name, doc, [])
            family.add_metric([], value)
            metrics.append(family)
        metrics += self.handoff.metrics("ingest")
        pending = gauge("natriton_ingest_pending", "Requests in the pipeline per model.", ["model"])
        for model, n in sorted(self.pending_per_model.items()):
            pending.add_metric([model], n)
        metrics.append(pending)
        live = gauge("natriton_ingest_live_copies", "Copies of each pipeline stage alive (heartbeats).", ["stage"])
        lost = counter("natriton_ingest_copies_lost", "Copies of a pipeline stage found dead.", ["stage"])
        for stage in IMAGE_PATH:
            live.add_metric([stage], self.stages.live(stage))
            lost.add_metric([stage], self.copies_lost[stage])
        metrics.extend((live, lost))
        metrics.extend(self.audio.metrics())
        if self.cameras is not None:
            metrics.extend(self.cameras.metrics())
        return metrics

    # ------------------------------------------------------------------ request path
    def audit_stream_config(self) -> StreamConfig:
        """The stream that keeps every audit record (``NATRITON_AUDIT_MAX_AGE_DAYS``, ``NATRITON_AUDIT_MAX_BYTES``)."""
        return StreamConfig(
            name=subjects.AUDIT_STREAM,
            subjects=[f"{subjects.AUDIT_PREFIX}.>"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            max_age=self.settings.audit_max_age_days * 86400,
            max_bytes=self.settings.audit_max_bytes,
        )

    async def handle(self, inbound: Inbound) -> None:
        """Admit, answer from cache, join an identical request in flight, or send into the pipeline."""
        tenant = tenant_of(inbound.headers)
        admitted = admit(
            inbound.data,
            inbound.headers,
            now_ms=h.now_ms(),
            reply_to=self.reply_subject,
            max_payload_bytes=self.settings.max_payload_bytes,
            default_timeout_ms=self.settings.default_timeout_ms,
            max_timeout_ms=self.settings.max_timeout_ms,
            max_top_k=self.settings.max_top_k,
            mesh_id=self.new_mesh_id(),
        )
        model = admitted.request.model
        try:
            if tenant.account and not inbound.reply:
                raise invalid_argument(
                    "fire-and-forget is for producers in the mesh's own NATS account; from a tenant account use "
                    "request/reply"
                )
            destination = answer_subject(inbound.reply, inbound.headers, model)
            self.tenants.admit(tenant.account, time.monotonic())
            try:
                reply, cache_state = await self._answer(admitted, tenant.account)
            finally:
                self.tenants.release(tenant.account)
        except MeshError as exc:
            exc.request_id, exc.model = admitted.request_id, model
            raise
        await self.respond(destination, admitted.request_id, reply, json=admitted.json, cache=cache_state)
        if self.settings.audit and isinstance(reply, InferResponse):
            self.audit(inbound, tenant, admitted.request_id, model, reply.version, "ok", cached=reply.cached)

    def audit(
        self, inbound: Inbound, tenant: Tenant, request_id: str, model: str, version: str, outcome: str, *, cached: bool
    ) -> None:
        """Publish the audit record of one answered request (not waited for: the stream takes it)."""
        record = AuditRecord(
            time_ms=h.now_ms(),
            tenant=tenant.account,
            user=tenant.user,
            request_id=request_id,
            mesh_id=inbound.headers.get(h.MESH_ID, ""),
            model=model,
            version=version,
            outcome=outcome,
            latency_ms=round((time.monotonic() - inbound.received_s) * 1000, 3),
            cached=cached,
            ingest=self.runtime.instance_id,
        )
        token = tenant.account if is_subject_token(tenant.account) else "_mesh"
        self.runtime.spawn(self.runtime.nc.publish(f"{subjects.AUDIT_PREFIX}.{token}", AUDIT_RECORDS.encode(record)))

    async def _answer(self, admitted: Admitted, tenant: str = "") -> tuple[Reply, str]:
        request = admitted.request
        span = trace.get_current_span()
        span.set_attribute("natriton.request_id", admitted.request_id)
        span.set_attribute("natriton.mesh_id", admitted.envelope.mesh_id)
        span.set_attribute("natriton.model", request.model)
        info, version = self.catalog.require(request.model, request.version)
        takes_audio = isinstance(info.profile, VadProfile)
        if takes_audio != isinstance(request.input, AudioInput):  # a vad model takes audio and nothing else
            raise invalid_argument(
                audio_only(info.name) if takes_audio else f"model {info.name!r} ({info.task}) does not take audio"
            )
        if not request.version:
            version = ""  # the router's routing policy chooses
        key = ""
        if request.use_cache:
            key = scoped_cache_key(
                tenant, cache_key(info.name, self._cache_version(info, version), request.input, request.top_k)
            )
        if key:
            entry = self.near.get(key, time.monotonic())
            if entry is None and (cached := await self.cache.get(key)) is not None:
                entry = CACHE_ENTRIES.decode(cached)
                self.near.put(key, entry, time.monotonic())
            if entry is not None:
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
        job = Job(
            model=info.name,
            version=version,
            task=info.task,
            top_k=request.top_k,
            cache_key=key,
            router_answers=self._router_answers(info),
        )
        return await self._lead(admitted, key, PreprocessTask(job=job, input=request.input)), "miss"

    # ------------------------------------------------------------------ live audio streams
    def audio_owners(self) -> list[str]:
        """The ingest copies among which live audio streams are shared out: those up for a heartbeat silence
        (each says how long in its heartbeats, so every copy reaches the same list), else (all just started)
        every live one and this one."""
        liveness = self.ingest_copies.liveness
        settled = liveness.instances("ingest", up_for_s=self.settings.heartbeat_dead_after_s, now_s=time.monotonic())
        return settled or sorted({*liveness.instances("ingest"), self.runtime.instance_id})

    async def run_audio_chunks(
        self, stream: str, info: ModelInfo, chunks: npt.NDArray[np.float32], state: npt.NDArray[np.float32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """One run of a live stream's chunks through router and postprocess with the stream's state; the speech
        probability of each chunk and the state after the last (sent again like any request if a copy dies)."""
        assert isinstance(info.profile, VadProfile)
        profile = info.profile
        tensors = (to_tensor(profile.audio_input, chunks), to_tensor(profile.state_input, state))
        job = Job(
            model=info.name, version="", task=info.task, sequence=stream, router_answers=self._router_answers(info)
        )
        envelope = Envelope(
            mesh_id=self.new_mesh_id(),
            request_id=f"audio:{stream}",
            deadline_ms=int(h.now_ms() + self.settings.audio_run_timeout_s * 1000),
            reply_to=self.reply_subject,
        )
        request = InferRequest(model=info.name, input=TensorInput(tensors=tensors), use_cache=False)
        reply = await self._through_pipeline(
            Admitted(request, envelope, json=False), PreprocessTask(job=job, input=request.input)
        )
        result = reply.result if isinstance(reply, InferResponse) else None
        if not isinstance(result, RawOutputs):
            raise MeshError(ErrorCode.INTERNAL, f"a live audio run came back as {type(result).__name__}")
        outputs = {t.name: to_array(t) for t in result.tensors}
        probabilities = np.asarray(outputs[profile.probability_output], dtype=np.float32).reshape(-1)
        return probabilities, np.asarray(outputs[profile.state_output], dtype=np.float32)

    def _router_answers(self, info: ModelInfo) -> bool:
        """Whether the router should answer this model's requests itself (decision 0012): when the setting allows
        it and the answer is cheap to make; a detector's (boxes scaled, NMS) is left to postprocess."""
        return self.settings.router_answers and not isinstance(info.profile, DetectorProfile)

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
        against the model anyway (one hop and one copy of the payload fewer). A stage without a live copy is
        ``unavailable`` at once; a request a dead copy may have held is sent again (:meth:`on_copies_lost`).
        """
        stages = stages_of(task)
        self._refuse_if_a_stage_is_down(stages)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        mesh_id = admitted.envelope.mesh_id
        self.pending[mesh_id] = future
        out = next_hop_headers(admitted.envelope)
        stored = ""
        slot: Taken | None = None
        try:
            if isinstance(task.input, TensorInput):  # large ones wait in shared memory until the reply (or deadline)
                slot = self.handoff.offer([t.data for t in task.input.tensors])
                infer = infer_task(task.job, task.input.tensors, slot)
                subject, payload = subjects.ROUTE, INFER_TASKS.encode(infer)
            elif isinstance(task.input, ImageInput) and (stored := await self._store_large_image(task.input, admitted)):
                frame = FrameRef(key=stored, width=0, height=0, encoding="image", size=len(task.input.data))
                by_reference = FrameTask(job=task.job, frame=frame, camera="", frame_number=0)
                subject, payload = subjects.PREPROCESS_STORED, FRAME_TASKS.encode(by_reference)
            else:
                subject, payload = subjects.PREPROCESS, PREPROCESS_TASKS.encode(task)
            self.in_flight[mesh_id] = InFlight(future, subject, payload, out, stages, time.monotonic())
            self.runtime.publish_soon(subject, payload, out)  # packed with this turn's other requests for the stage
            async with asyncio.timeout(admitted.envelope.remaining_s()):
                data = await future
        except TimeoutError as exc:
            raise MeshError(ErrorCode.DEADLINE_EXCEEDED, "no answer before the deadline") from exc
        finally:
            self.pending.pop(mesh_id, None)
            self.in_flight.pop(mesh_id, None)
            self.handoff.give_back(slot)
            if stored:
                await self.frames.delete(stored)
        try:
            reply = REPLY_CODEC.decode(data)
        except msgspec.MsgspecError as exc:
            raise MeshError(ErrorCode.INTERNAL, "an internal reply did not decode") from exc
        return _raise_if_error(reply)

    def _refuse_if_a_stage_is_down(self, stages: tuple[str, ...]) -> None:
        for stage in stages:
            if self.stages.none_alive(stage):
                self.counts["refused_no_copy"] += 1
                raise MeshError(ErrorCode.UNAVAILABLE, f"no live copy of {stage}", retry_after_ms=1000)

    # ------------------------------------------------------------------ lost hops
    def on_copies_lost(self, dead: list[Peer]) -> None:
        """Copies died (no heartbeat, or restarted): send again what they may have held, or answer ``unavailable``
        at once where a stage has no live copy left."""
        lost = {peer.service for peer in dead}
        self.copies_lost.update(peer.service for peer in dead)
        self._send_again(lambda record: not lost.isdisjoint(record.stages))

    def on_last_copy_left(self, stage: str) -> None:
        """The last copy of ``stage`` is leaving (scaled to zero, or stopped). It finishes what it has taken, but
        requests still on their way to it have nowhere to go: after a grace period, what is unanswered is sent
        again if a copy came back, or answered ``unavailable`` (instead of waiting for its deadline)."""
        self.runtime.spawn(self._settle_after_last_copy_left(stage, time.monotonic()))

    async def _refuse_stranded_once_settled(self) -> None:
        """Until the stage watch has settled, "no copy heard" may mean "not heard yet", so requests go out; once it
        has, those sent to a stage with no copy at all are answered ``unavailable`` (not left to their deadline)."""
        await asyncio.sleep(self.stages.liveness.settle_s)
        self._send_again(lambda record: any(self.stages.none_alive(stage) for stage in record.stages))

    async def _settle_after_last_copy_left(self, stage: str, left_at: float) -> None:
        await asyncio.sleep(self.settings.heartbeat_dead_after_s)
        self._send_again(lambda record: stage in record.stages and record.sent_at_s <= left_at)

    def on_reconnected(self) -> None:
        """NATS came back: a request in flight then may have been lost with the server's buffers. Send those again
        once every stage has been heard since (a stage not yet back would drop them: core NATS keeps nothing)."""
        self.runtime.spawn(self._send_again_when_stages_are_back(time.monotonic()))

    async def _send_again_when_stages_are_back(self, reconnected_at: float) -> None:
        give_up = reconnected_at + self.settings.heartbeat_dead_after_s
        liveness = self.stages.liveness
        while not all(liveness.heard_since(stage, reconnected_at) for stage in IMAGE_PATH):
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.stages.next_heartbeat()
        self._send_again(lambda _: True)  # everything sent before now: also what went out while a stage was away

    def _send_again(self, affected: Callable[[InFlight], bool]) -> None:
        for record in list(self.in_flight.values()):
            now = time.monotonic()
            if record.future.done() or record.sent_at_s >= now or not affected(record):
                continue
            down = next((stage for stage in record.stages if self.stages.none_alive(stage)), "")
            if down:
                self.counts["refused_no_copy"] += 1
                record.future.set_exception(
                    MeshError(ErrorCode.UNAVAILABLE, f"no live copy of {down} left", retry_after_ms=1000)
                )
            elif record.resends < self.settings.max_resends:
                record.resends += 1
                record.sent_at_s = now
                self.counts["resent"] += 1
                self.runtime.spawn(self.runtime.publish(record.subject, record.payload, record.headers))

    async def _store_large_image(self, image: ImageInput, admitted: Admitted) -> str:
        """For an image of at least ``NATRITON_CLAIM_CHECK_BYTES``: store it in the frame store and return its key,
        so the bytes cross NATS once (to Redis) instead of riding the hop (decision 0006). '' keeps it inline: a
        small image, the claim check turned off, or the store unavailable (the request still runs)."""
        threshold = self.settings.claim_check_bytes
        if threshold <= 0 or len(image.data) < threshold:
            return ""
        key = frame_key(admitted.envelope.mesh_id)
        try:
            await self.frames.put(key, image.data, ttl_s=admitted.envelope.remaining_s() + 5.0)
        except MeshError:
            self.counts["claim_check_failures"] += 1
            return ""
        self.counts["claim_checked"] += 1
        return key

    async def on_reply(self, msg: Msg) -> None:
        """Answers from postprocess (or errors from any hop) for requests this copy owns, by mesh id: one message, or
        a pack of several (:mod:`natriton.wirebatch`)."""
        if not wirebatch.is_packed(msg.headers):
            self._answer_arrived(msg.headers or {}, msg.data)
            return
        try:
            items = wirebatch.unpack(msg.data)
        except msgspec.MsgspecError as exc:
            self.counts["malformed_replies"] += 1
            log.warning("a malformed pack of replies: %s", exc)
            return
        for item in items:
            self._answer_arrived(item.headers, item.data)

    def _answer_arrived(self, headers: dict[str, str], data: bytes) -> None:
        future = self.pending.get(headers.get(h.MESH_ID, ""))
        if future is None or future.done():
            self.counts["late_replies"] += 1  # the producer already got deadline_exceeded
            return
        future.set_result(data)

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
            out[h.SERVICE_ERROR] = one_line(reply.message)  # whatever a hop wrote, one bounded header line
            out[h.SERVICE_ERROR_CODE] = str(reply.code.status)
        await self.runtime.publish(subject, REPLY_CODEC.encode(reply, json=json), out)

    async def reply_error(self, inbound: Inbound, error: MeshError) -> None:
        """``on_error`` of the public endpoint: a typed error reply, where the answer would have gone."""
        tenant = tenant_of(inbound.headers)
        try:
            subject = (
                ""
                if tenant.account and not inbound.reply
                else answer_subject(inbound.reply, inbound.headers, error.model)
            )
        except MeshError:
            self.counts["answers_undeliverable"] += 1  # a malformed Natriton-Results-To: nowhere to say so
            return
        request_id = error.request_id
        if not request_id:  # an unexpected failure before the id was known
            with contextlib.suppress(MeshError):
                request_id = request_id_of(inbound.headers)
        await self.respond(subject, request_id, error_reply(request_id, error), json=wants_json(inbound.headers))
        if self.settings.audit:
            self.audit(inbound, tenant, request_id, error.model, "", error.code.value, cached=False)

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
    return IngestApp(runtime, settings, ModelCatalog(), RouteTable(), cache, FrameStore(settings.redis_url))
