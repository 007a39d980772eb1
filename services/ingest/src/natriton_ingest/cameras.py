"""Cameras: the ingest copy that holds a camera's lease reads its source and keeps its state.

Per camera (:class:`CameraWorker`): a :class:`~natriton.video.source.SourceReader` in a thread yields RGB frames;
the change gate decides whether a frame needs inference; a frame that does is stored once as JPEG in the frame
store (Redis, decision 0006) and its ~200 B :class:`~natriton.messages.FrameTask` goes to the camera's JetStream
subject; the answer comes back on this copy's reply subject like any request's, correlated by mesh id. Results are
put back in frame order (:class:`~natriton.video.resequencer.Resequencer`), tracked, turned into events, and
published as :class:`~natriton_client.protocol.FrameResult` on ``natriton.v1.detections.<camera>`` and events on
``natriton.v1.events.<camera>`` (both kept by the JetStream stream ``NATRITON_CAMERA_RESULTS``).

A camera with an ``audio_model`` also sends its sound (:class:`CameraSound`): the reader's audio pieces go out as
the live audio stream named like the camera, the same :class:`~natriton.messages.AudioChunk` s a microphone
publishes, so the stream's owner (any ingest copy, :mod:`natriton_ingest.audio_streams`) runs the speech model and
publishes ``speech_start``/``speech_end`` on ``natriton.v1.audio.events.<camera>``.

Delivery modes:

- **reliable**: the reader blocks when the camera is behind (``QueuePolicy.BLOCK``), at most
  ``reliable_in_flight`` frames are out at once, every frame gets exactly one result in order (a frame whose
  pipeline copy died is delivered again by JetStream; the second answer is ignored), lag is reported.
- **realtime**: at most ``realtime_in_flight`` frames are out; a newer frame waits in a one-frame slot and replaces
  the one waiting there (a drop, counted), so the newest frame is always the next one sent; when a frame's result
  arrives, older frames still out are abandoned (drops). Latency stays bounded under overload.

:class:`CameraManager` takes and renews camera leases (:mod:`natriton.streams`), starts and stops workers as
sources are added, changed or removed, and writes each camera's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from PIL import Image

from natriton.claimcheck import FrameStore, frame_key
from natriton.envelope import Envelope
from natriton.errors import ErrorCode, MeshError
from natriton.frames import ensure_results_stream, frames_subject
from natriton.headers import now_ms
from natriton.messages import (
    AudioChunk,
    AudioChunkAck,
    AudioInput,
    AudioStreamState,
    Codec,
    Detection,
    Detections,
    ErrorReply,
    FrameRef,
    FrameTask,
    InferResponse,
    Job,
    Reply,
    SourceState,
    StreamMode,
    StreamSource,
    StreamStatus,
)
from natriton.metrics import Metric, counter, gauge
from natriton.runtime import ServiceRuntime
from natriton.settings import redact
from natriton.streams import Lease, StreamRegistry, StreamSources
from natriton.tensors import to_tensor
from natriton.video.change_gate import ChangeGate
from natriton.video.events import TrackEvents
from natriton.video.resequencer import Released, Resequencer
from natriton.video.source import (
    AUDIO_RATE,
    AudioPiece,
    FrameSample,
    QueuePolicy,
    SourceReader,
    SourceSpec,
    SourceStats,
)
from natriton.video.tracking import CameraTracker, TrackedDetection
from natriton_client.protocol import (
    CameraEvent,
    FrameResult,
    TrackedObject,
    audio_chunks_subject,
    audio_state_subject,
    detections_subject,
    events_subject,
)

log = logging.getLogger(__name__)
FRAME_TASKS: Final[Codec[FrameTask]] = Codec(FrameTask)
RESULTS: Final[Codec[FrameResult]] = Codec(FrameResult)
EVENTS: Final[Codec[CameraEvent]] = Codec(CameraEvent)
AUDIO_CHUNKS: Final[Codec[AudioChunk]] = Codec(AudioChunk)
AUDIO_ANSWERS: Final[Codec[AudioChunkAck | ErrorReply]] = Codec(AudioChunkAck | ErrorReply)
AUDIO_STATES: Final[Codec[AudioStreamState | ErrorReply]] = Codec(AudioStreamState | ErrorReply)
JPEG_QUALITY: Final = 90
STATE_CODES: Final = {
    SourceState.CONNECTING: 0,
    SourceState.LIVE: 1,
    SourceState.LOST: 2,
    SourceState.ENDED: 3,
}
"""``natriton_camera_state`` values."""


@dataclass(frozen=True)
class CameraLimits:
    """How a camera's frames flow (from ingest's settings)."""

    realtime_in_flight: int = 2
    reliable_in_flight: int = 16
    realtime_deadline_s: float = 5.0
    reliable_deadline_s: float = 120.0
    frame_ttl_s: float = 300.0
    """How long a stored frame outlives an owner that died before deleting it."""


@dataclass
class Reused:
    """A frame the change gate found unchanged: it gets the detections of the last inferred frame before it."""


@dataclass
class Dropped:
    """A real-time frame that was never analysed (superseded by a newer one)."""


Outcome = Reply | Reused | Dropped


@dataclass
class CameraCounters:
    """What a camera has done (shown on the page, in the status and the metrics)."""

    sent: int = 0
    answered: int = 0
    reused: int = 0
    dropped: int = 0
    errors: int = 0
    published: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    published_at: deque[float] = field(default_factory=lambda: deque(maxlen=200))
    audio_s: float = 0.0
    """Seconds of the audio track sent as the camera's live audio stream."""

    def fps(self) -> float:
        """Results published per second over the last few seconds."""
        now = time.monotonic()
        recent = [t for t in self.published_at if now - t <= 5.0]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(1e-6, recent[-1] - recent[0])

    def latency_ms(self, quantile: float) -> float:
        """End-to-end frame latency (capture to result) over the last results."""
        if not self.latencies_ms:
            return 0.0
        return float(np.quantile(np.asarray(self.latencies_ms), quantile))


class CameraContext:
    """What a camera worker needs from its ingest copy."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        store: FrameStore,
        reply_subject: str,
        new_mesh_id: Callable[[], str],
        expect_reply: Callable[[str], asyncio.Future[bytes]],
        forget_reply: Callable[[str], None],
        decode_reply: Callable[[bytes], Reply],
        limits: CameraLimits,
        on_frame: Callable[[str, FrameResult, npt.NDArray[np.uint8]], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.reply_subject = reply_subject
        self.new_mesh_id = new_mesh_id
        self.expect_reply = expect_reply
        self.forget_reply = forget_reply
        self.decode_reply = decode_reply
        self.limits = limits
        self.on_frame = on_frame


def encode_jpeg(pixels: npt.NDArray[np.uint8], quality: int = JPEG_QUALITY) -> bytes:
    """An RGB frame as JPEG (what the frame store keeps: 27x fewer bytes than raw, decision 0006)."""
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def tracked_objects(tracked: list[TrackedDetection]) -> tuple[TrackedObject, ...]:
    """The tracker's output in the public form."""
    return tuple(TrackedObject(track_id=t.track_id, label=t.label, score=t.score, box=t.box) for t in tracked)


class CameraWorker:
    """Reads one camera and publishes its results; runs until stopped or its source ends."""

    def __init__(self, source: StreamSource, ctx: CameraContext, *, reader: SourceReader | None = None) -> None:
        self.source = source
        self.ctx = ctx
        self.camera = source.camera
        self.reliable = source.mode is StreamMode.RELIABLE
        self.reader = reader or SourceReader(
            SourceSpec(source.url, fps=source.fps, loop=source.loop, pace=True, audio=bool(source.audio_model)),
            policy=QueuePolicy.BLOCK if self.reliable else QueuePolicy.DROP_OLDEST,
            queue_size=4 if self.reliable else 2,
            name=source.camera,
        )
        self.gate = ChangeGate() if source.change_gate else None
        self.tracker = CameraTracker()
        self.events = TrackEvents(source.camera)
        max_buffered = 4096 if self.reliable else 64
        self.order: Resequencer[tuple[FrameSample, Outcome]] = Resequencer(max_buffered=max_buffered)
        self.counters = CameraCounters()
        self.in_flight: dict[int, asyncio.Task[None]] = {}
        self.waiting: FrameSample | None = None  # realtime: the newest frame waiting for a free slot
        self.slot_free = asyncio.Event()
        self.last_detections: tuple[Detection, ...] = ()
        self.last_version = ""
        self.last_frame: npt.NDArray[np.uint8] | None = None
        self.task: asyncio.Task[None] | None = None
        self.sound = CameraSound(self) if source.audio_model else None
        self.stopping = False

    @property
    def capacity(self) -> int:
        limits = self.ctx.limits
        return limits.reliable_in_flight if self.reliable else limits.realtime_in_flight

    def start(self) -> None:
        self.reader.start()
        self.task = asyncio.get_running_loop().create_task(self.run(), name=f"camera {self.camera}")
        if self.sound is not None:
            self.sound.start()

    async def stop(self) -> None:
        """Stop reading, abandon frames still out, end the camera's tracks."""
        self.stopping = True  # frames given up now must not let a waiting frame go out
        self.waiting = None
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        out = list(self.in_flight.values())
        for task in out:
            task.cancel()
        await asyncio.gather(*out, return_exceptions=True)
        await self.reader.aclose()
        if self.sound is not None:
            await self.sound.finish()
        with contextlib.suppress(NatsError, OSError):  # at shutdown NATS may be closed already
            await self._publish_events(self.events.finish(self._last_number(), time.time()))

    def stats(self) -> SourceStats:
        return self.reader.stats()

    # ------------------------------------------------------------------ reading
    async def run(self) -> None:
        try:
            async for sample in self.reader.frames():
                if self.gate is not None and not self.gate.decide(sample.pixels):
                    self.counters.reused += 1
                    await self._complete(sample, Reused())
                    continue
                if self.reliable:
                    while len(self.in_flight) >= self.capacity:
                        self.slot_free.clear()
                        await self.slot_free.wait()
                    self._send(sample)
                elif len(self.in_flight) < self.capacity:
                    self._send(sample)
                else:
                    if self.waiting is not None:
                        await self._drop(self.waiting)
                    self.waiting = sample
            while self.in_flight:  # the source ended: let the last frames finish
                await asyncio.wait(list(self.in_flight.values()))
            if self.waiting is not None:
                await self._drop(self.waiting)
                self.waiting = None
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("camera %s: stopped by an unexpected error", self.camera)

    async def _drop(self, sample: FrameSample) -> None:
        self.counters.dropped += 1
        if self.gate is not None:
            self.gate.invalidate()  # it may have been the gate's reference: infer the next frame
        await self._complete(sample, Dropped())

    # ------------------------------------------------------------------ one frame through the mesh
    def _send(self, sample: FrameSample) -> None:
        task = asyncio.get_running_loop().create_task(self._analyse(sample))
        self.in_flight[sample.frame_number] = task
        task.add_done_callback(lambda _: self._finished(sample.frame_number))

    def _finished(self, frame_number: int) -> None:
        self.in_flight.pop(frame_number, None)
        self.slot_free.set()
        if self.waiting is not None and len(self.in_flight) < self.capacity and not self.stopping:
            sample, self.waiting = self.waiting, None
            self._send(sample)

    async def _analyse(self, sample: FrameSample) -> None:
        ctx, limits = self.ctx, self.ctx.limits
        mesh_id = ctx.new_mesh_id()
        key = frame_key(mesh_id)
        deadline_s = limits.reliable_deadline_s if self.reliable else limits.realtime_deadline_s
        envelope = Envelope(
            mesh_id=mesh_id,
            request_id=f"{self.camera}:{sample.frame_number}",
            deadline_ms=now_ms() + int(deadline_s * 1000),
            reply_to=ctx.reply_subject,
        )
        future = ctx.expect_reply(mesh_id)
        reply: Outcome
        try:
            loop = asyncio.get_running_loop()
            jpeg = await loop.run_in_executor(None, encode_jpeg, sample.pixels)
            await ctx.store.put(key, jpeg, ttl_s=max(limits.frame_ttl_s, deadline_s))
            frame_task = FrameTask(
                job=Job(model=self.source.model, version="", task="detector"),
                frame=FrameRef(key=key, width=sample.width, height=sample.height, encoding="jpeg", size=len(jpeg)),
                camera=self.camera,
                frame_number=sample.frame_number,
            )
            js = ctx.runtime.nc.jetstream()
            await js.publish(
                frames_subject(self.source.mode, self.camera),
                FRAME_TASKS.encode(frame_task),
                # JetStream stores a publish retried after a lost acknowledgement once (this process's boot id:
                # frame numbers start again when a copy restarts)
                headers={**envelope.to_headers(), "Nats-Msg-Id": f"{mesh_id}.{ctx.runtime.micro.id}"},
            )
            self.counters.sent += 1
            async with asyncio.timeout(envelope.remaining_s()):
                reply = ctx.decode_reply(await future)
        except TimeoutError:
            reply = ErrorReply(request_id=envelope.request_id, code=ErrorCode.DEADLINE_EXCEEDED,
                               message="no answer before the frame's deadline")  # fmt: skip
        except MeshError as exc:
            reply = ErrorReply(request_id=envelope.request_id, code=exc.code, message=exc.message)
        except (OSError, NatsError) as exc:  # JetStream refused or NATS is down: the frame is answered anyway
            reply = ErrorReply(request_id=envelope.request_id, code=ErrorCode.UNAVAILABLE,
                               message=f"could not send the frame: {type(exc).__name__}")  # fmt: skip
        except asyncio.CancelledError:  # abandoned (a newer frame's result came first) or the camera stopped
            await ctx.store.delete(key)
            ctx.forget_reply(mesh_id)
            raise
        finally:
            ctx.forget_reply(mesh_id)
        await ctx.store.delete(key)
        self.counters.answered += 1
        if not self.reliable:  # older frames still out are stale now: abandon them
            for older, pending in list(self.in_flight.items()):
                if older < sample.frame_number:
                    pending.cancel()
                    self.counters.dropped += 1
                    await self._complete_number(older, Dropped())
            for released in self.order.expect_at_least(sample.frame_number):
                await self._release(released)
        await self._complete(sample, reply)

    # ------------------------------------------------------------------ results, in frame order
    async def _complete(self, sample: FrameSample, outcome: Outcome) -> None:
        for released in self.order.push(sample.frame_number, (sample, outcome)):
            await self._release(released)

    async def _complete_number(self, frame_number: int, outcome: Outcome) -> None:
        for released in self.order.skip(frame_number):
            await self._release(released)

    async def _release(self, released: Released[tuple[FrameSample, Outcome]]) -> None:
        sample, outcome = released.item
        if isinstance(outcome, Dropped):
            return
        error: ErrorCode | None = None
        message = ""
        reused = isinstance(outcome, Reused)
        if reused:
            detections = self.last_detections
        elif isinstance(outcome, InferResponse) and isinstance(outcome.result, Detections):
            detections = outcome.result.detections
            self.last_detections, self.last_version = detections, outcome.version
        elif isinstance(outcome, InferResponse):
            detections, error, message = (), ErrorCode.INVALID_ARGUMENT, f"{self.source.model} is not a detector"
        else:
            assert isinstance(outcome, ErrorReply)
            detections, error, message = (), outcome.code, outcome.message
            self.counters.errors += 1
        timestamp = sample.captured_at
        tracked = self.tracker.update(detections, sample.frame_number, timestamp) if error is None else []
        result = FrameResult(
            camera=self.camera,
            frame_number=sample.frame_number,
            pts_s=sample.pts,
            captured_ms=int(timestamp * 1000),
            published_ms=now_ms(),
            width=sample.width,
            height=sample.height,
            objects=tracked_objects(tracked),
            reused=reused,
            model=self.source.model,
            version=self.last_version,
            error=error,
            error_message=message,
        )
        await self.ctx.runtime.nc.publish(detections_subject(self.camera), RESULTS.encode(result))
        if error is None:
            await self._publish_events(self.events.update(tracked, sample.frame_number, timestamp))
        self.counters.published += 1
        self.counters.published_at.append(time.monotonic())
        self.counters.latencies_ms.append(result.published_ms - result.captured_ms)
        if self.ctx.on_frame is not None:
            self.ctx.on_frame(self.camera, result, sample.pixels)

    async def _publish_events(self, events: list[CameraEvent]) -> None:
        for event in events:
            await self.ctx.runtime.nc.publish(events_subject(self.camera), EVENTS.encode(event))

    def _last_number(self) -> int:
        return max(self.order.next_expected - 1, 0)

    def status(self, owner: str, page: str = "") -> StreamStatus:
        stats = self.reader.stats()
        return StreamStatus(
            camera=self.camera,
            state=stats.state,
            owner=owner,
            updated_ms=now_ms(),
            frames_read=stats.frames_read,
            frames_emitted=stats.frames_emitted,
            reconnects=stats.reconnects,
            last_error=redact("url", stats.last_error),
            page=page,
        )


class CameraSound:
    """Sends a camera's audio track as its live audio stream: one :class:`~natriton.messages.AudioChunk` per
    reader piece (~0.26 s of 16 kHz mono PCM) on ``natriton.v1.audio.chunks.<camera>``, ``seq`` counting on from
    where the stream's owner stands (a camera that moved to this copy carries on its stream instead of being taken
    for a repeat of piece 0), and an empty ``end`` piece when the source ends or the camera stops."""

    RESUME_TIMEOUT_S: Final = 1.0
    FINISH_TIMEOUT_S: Final = 5.0

    def __init__(self, worker: CameraWorker) -> None:
        self.worker = worker
        self.subject = audio_chunks_subject(worker.camera)
        self.model = worker.source.audio_model
        self.seq = 0
        self.refused = 0
        """Pieces the stream's owner refused."""
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run(), name=f"camera {self.worker.camera} sound")

    async def finish(self) -> None:
        """Wait for the last pieces and the end piece (the reader is stopped, so its pieces have ended)."""
        if self.task is None:
            return
        try:
            async with asyncio.timeout(self.FINISH_TIMEOUT_S):
                await asyncio.shield(self.task)
        except TimeoutError:
            self.task.cancel()

    async def run(self) -> None:
        nc = self.worker.ctx.runtime.nc
        answers = nc.new_inbox()
        subscription = await nc.subscribe(answers, cb=self._answered)
        try:
            self.seq = await self._resume_seq()
            async for piece in self.worker.reader.audio_pieces():
                await nc.publish(self.subject, AUDIO_CHUNKS.encode(self._chunk(piece)), reply=answers)
                self.seq += 1
                self.worker.counters.audio_s += piece.duration_s
            end = AudioChunk(
                seq=self.seq,
                audio=AudioInput(pcm=to_tensor("PCM", np.zeros(0, np.int16)), sample_rate=AUDIO_RATE),
                model=self.model,
                end=True,
            )
            await nc.publish(self.subject, AUDIO_CHUNKS.encode(end))
            await nc.flush(timeout=2)
        except (NatsError, OSError, TimeoutError) as exc:  # NATS down or closed at shutdown: the owner ends it quiet
            log.warning("camera %s: its sound stopped: %s", self.worker.camera, type(exc).__name__)
        finally:
            with contextlib.suppress(NatsError):
                await subscription.unsubscribe()

    async def _answered(self, msg: Msg) -> None:
        """The owner's answer to a piece: an ack, or an error (a model that takes no audio, …) that the camera's
        status shows as its ``last_error``."""
        try:
            answer = AUDIO_ANSWERS.decode(msg.data)
        except msgspec.MsgspecError:
            return
        if isinstance(answer, ErrorReply):
            self.refused += 1
            error = f"audio refused ({answer.code.value}): {answer.message}"
            if error != self.worker.reader.stats().last_error:
                log.warning("camera %s: %s", self.worker.camera, error)
                self.worker.reader.monitor.record_error(error)

    def _chunk(self, piece: AudioPiece) -> AudioChunk:
        pcm = to_tensor("PCM", piece.samples)
        return AudioChunk(seq=self.seq, audio=AudioInput(pcm=pcm, sample_rate=piece.sample_rate), model=self.model)

    async def _resume_seq(self) -> int:
        """The ``seq`` the stream's owner waits for (0 when it has no such stream, or nobody answers)."""
        nc = self.worker.ctx.runtime.nc
        try:
            answer = await nc.request(audio_state_subject(self.worker.camera), b"", timeout=self.RESUME_TIMEOUT_S)
            state = AUDIO_STATES.decode(answer.data)
        except (NatsError, TimeoutError, msgspec.MsgspecError):
            return 0
        return state.next_seq if isinstance(state, AudioStreamState) else 0


class CameraManager:
    """Holds this copy's share of the cameras: leases, workers and status."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        registry: StreamRegistry,
        ctx: CameraContext,
        *,
        max_cameras: int,
        lease_ttl_s: float,
        make_worker: Callable[[StreamSource, CameraContext], CameraWorker] = CameraWorker,
        page_url: str = "",
    ) -> None:
        self.runtime = runtime
        self.registry = registry
        self.ctx = ctx
        self.max_cameras = max_cameras
        self.lease_ttl_s = lease_ttl_s
        self.make_worker = make_worker
        self.page_url = page_url
        """This copy's live page, written into each camera's status (:attr:`StreamStatus.page`)."""
        self.sources = StreamSources()
        self.workers: dict[str, CameraWorker] = {}
        self.leases: dict[str, Lease] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await ensure_results_stream(self.runtime.nc.jetstream())
        await self.sources.start(self.runtime.nc)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="cameras")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for camera in list(self.workers):
            await self._release(camera)
        await self.sources.stop()

    async def _loop(self) -> None:
        period = self.lease_ttl_s / 3
        while True:
            try:
                await self.reconcile()
            except Exception:
                log.exception("cameras: reconcile failed")
            await asyncio.sleep(period * random.uniform(0.8, 1.0))

    async def reconcile(self) -> None:
        """Follow the sources: renew held leases, stop removed or changed cameras, take free ones."""
        owner = self.runtime.instance_id
        for camera, worker in list(self.workers.items()):
            wanted = self.sources.get(camera)
            if wanted != worker.source:
                log.info("camera %s: source %s, stopping", camera, "removed" if wanted is None else "changed")
                await self._release(camera)
                continue
            lease = await self.registry.renew(self.leases[camera])
            if lease is None:
                log.warning("camera %s: lease lost to another copy, stopping", camera)
                await self._stop_worker(camera)
                continue
            self.leases[camera] = lease
            finished = worker.task is not None and worker.task.done()
            await self.registry.put_status(worker.status(owner, self.page_url))
            if finished and worker.reader.state is SourceState.ENDED:
                continue  # an ended file keeps its lease and final status until the source is removed
        taken = 0
        for camera in self.sources.names():
            if camera in self.workers or len(self.workers) >= self.max_cameras or taken >= 1:
                continue
            source = self.sources.get(camera)
            if source is None:
                continue
            lease = await self.registry.acquire(camera, owner)
            if lease is None:
                continue
            self.leases[camera] = lease
            worker = self.make_worker(source, self.ctx)
            self.workers[camera] = worker
            worker.start()
            taken += 1  # one new camera per round: copies that start together share them out
            log.info("camera %s: reading %s (%s)", camera, redact("url", source.url), source.mode.value)
            await self.registry.put_status(worker.status(owner, self.page_url))

    async def _stop_worker(self, camera: str) -> None:
        worker = self.workers.pop(camera, None)
        self.leases.pop(camera, None)
        if worker is not None:
            await worker.stop()

    async def _release(self, camera: str) -> None:
        lease = self.leases.get(camera)
        await self._stop_worker(camera)
        if lease is not None:
            with contextlib.suppress(NatsError, OSError):  # NATS closed at shutdown: the lease expires by itself
                await self.registry.release(lease)

    def counters(self) -> dict[str, CameraCounters]:
        return {camera: worker.counters for camera, worker in self.workers.items()}

    def metrics(self) -> list[Metric]:
        """Per camera this copy reads: frames by outcome, source counters and state, recent latency."""
        frames = counter(
            "natriton_camera_frames",
            "Frames of a camera by outcome: inferred, reused (change gate), dropped (real time), failed.",
            ["camera", "outcome"],
        )
        read = counter("natriton_camera_frames_read", "Frames decoded from a camera's source.", ["camera"])
        reconnects = counter("natriton_camera_reconnects", "Times a lost source was opened again.", ["camera"])
        state = gauge("natriton_camera_state", "Source state: 0 connecting, 1 live, 2 lost, 3 ended.", ["camera"])
        latency = gauge(
            "natriton_camera_latency_seconds", "End-to-end frame latency over the last results.", ["camera", "quantile"]
        )
        sound = counter(
            "natriton_camera_audio_seconds",
            "Seconds of a camera's audio track sent as its live audio stream.",
            ["camera"],
        )
        held = gauge("natriton_ingest_cameras", "Cameras this copy reads.", [])
        held.add_metric([], len(self.workers))
        for camera, worker in sorted(self.workers.items()):
            c, stats = worker.counters, worker.reader.stats()
            for outcome, value in (
                ("inferred", c.answered - c.errors),
                ("reused", c.reused),
                ("dropped", c.dropped),
                ("failed", c.errors),
            ):
                frames.add_metric([camera, outcome], value)
            read.add_metric([camera], stats.frames_read)
            if worker.sound is not None:
                sound.add_metric([camera], c.audio_s)
            reconnects.add_metric([camera], stats.reconnects)
            state.add_metric([camera], STATE_CODES[stats.state])
            for quantile in (0.5, 0.95):
                latency.add_metric([camera, str(quantile)], c.latency_ms(quantile) / 1000)
        return [frames, read, reconnects, state, latency, sound, held]
