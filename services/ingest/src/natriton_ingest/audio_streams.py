"""Live audio streams (issue 11): each stream has one owner, an ingest copy, that keeps its state.

A producer publishes a stream's :class:`~natriton.messages.AudioChunk` s on ``natriton.v1.audio.chunks.<stream>``.
Every ingest copy hears every chunk; the owner is the copy that the stream's id hashes to highest among the live,
settled ingest copies (rendezvous hashing over ingest's heartbeats), and the others drop it. The owner puts the
pieces back in ``seq`` order, resamples and frames them continuously (:class:`~natriton.audio.StreamFramer`),
sends each run of whole chunks with the stream's recurrent state through the pipeline (router → Triton →
postprocess, like a clip; any router copy can take it), keeps the state that comes back, and turns the speech
probabilities into events on ``natriton.v1.audio.events.<stream>`` (:class:`~natriton.audio.SpeechTracker`).
One run per stream is in flight at a time (the next needs its state); the runs of many streams share batches.

When the owner changes (a copy died, or a new one settled), the new owner starts the stream from a fresh state at
the next chunk it gets; the old one, if alive, ends it as ``moved``. A stream silent for ``audio_idle_s`` is ended
as ``quiet``. Both are counted; docs/reliability.md says what a consumer sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

import msgspec
import numpy as np
import numpy.typing as npt
import xxhash
from nats.aio.msg import Msg

from natriton import headers as h
from natriton import subjects
from natriton.audio import (
    Audio,
    SpeechEvent,
    SpeechTracker,
    StreamFramer,
    decode_audio,
    pcm_audio,
    speech_rules,
)
from natriton.errors import ErrorCode, MeshError, invalid_argument
from natriton.messages import (
    AudioChunk,
    AudioChunkAck,
    AudioEvent,
    AudioStreamEnded,
    AudioStreamState,
    Codec,
    ErrorReply,
    ModelInfo,
    SpeechEnded,
    SpeechStarted,
    VoiceActivity,
)
from natriton.metrics import Metric, counter, gauge
from natriton.pipeline import error_reply
from natriton.profiles import VadProfile
from natriton.runtime import ServiceRuntime
from natriton.streams import CAMERA_ID
from natriton.tensors import to_array
from natriton_ingest.live import AudioView
from natriton_ingest.logic import wants_json

log = logging.getLogger(__name__)
CHUNKS: Final[Codec[AudioChunk]] = Codec(AudioChunk)
ACKS: Final[Codec[AudioChunkAck]] = Codec(AudioChunkAck)
EVENTS: Final[Codec[AudioEvent]] = Codec(AudioEvent)
STATES: Final[Codec[AudioStreamState]] = Codec(AudioStreamState)
ERRORS: Final[Codec[ErrorReply]] = Codec(ErrorReply)
EndReason = Literal["end", "quiet", "moved"]
MAX_WAITING: Final = 64
"""Pieces kept while one before them is missing; more (or more than ``MAX_WAITING_S`` of audio): the missing one is
given up (counted) and the stream goes on."""
MAX_WAITING_S: Final = 10.0
RECENT_CHUNKS: Final = 94
"""Chunks of speech probability the live page shows per stream (~3 s)."""

RunChunks = Callable[[str, ModelInfo, npt.NDArray[np.float32], npt.NDArray[np.float32]], Awaitable[tuple[
    npt.NDArray[np.float32], npt.NDArray[np.float32]]]]  # fmt: skip
"""``(stream, model, chunks [n, context + chunk], state [1, ...])`` → ``(probabilities [n], next state)``."""


def _content_type(json: bool) -> dict[str, str]:
    return {h.CONTENT_TYPE: h.JSON if json else h.MSGPACK}


def owner_of(stream: str, instances: Iterable[str]) -> str:
    """The copy that owns ``stream``: the highest hash of (copy, stream) (rendezvous hashing: when a copy comes or
    goes, only the streams it wins or held change owner)."""
    return max(instances, key=lambda instance: (xxhash.xxh64_intdigest(f"{instance}\0{stream}".encode()), instance))


@dataclass(eq=False)
class LiveStream:
    """One stream at its owner."""

    name: str
    info: ModelInfo
    profile: VadProfile
    state: npt.NDArray[np.float32]
    tracker: SpeechTracker
    framer: StreamFramer | None = None
    next_seq: int = 0
    waiting: dict[int, tuple[AudioChunk, Audio]] = field(default_factory=dict)
    """Pieces taken (decoded) but not yet run, by ``seq``."""
    last_heard_s: float = 0.0
    worker: asyncio.Task[None] | None = None
    speaking: bool = False
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_CHUNKS))
    """The latest chunks' speech probabilities (the live page draws them)."""

    @property
    def waiting_s(self) -> float:
        """Seconds of audio held back for a missing piece."""
        return sum(len(audio.samples) / audio.sample_rate for _, audio in self.waiting.values())

    @property
    def time_s(self) -> float:
        """Seconds of the stream framed so far."""
        return (self.framer.framed if self.framer else 0) / self.profile.sample_rate


class AudioStreams:
    """The live audio streams this ingest copy owns, and the endpoints every copy serves for them."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        models: Callable[[str], ModelInfo],
        run_chunks: RunChunks,
        owners: Callable[[], list[str]],
        *,
        idle_s: float,
        max_bytes: int,
        max_duration_s: float,
        max_streams: int,
    ) -> None:
        self.runtime = runtime
        self.models = models
        self.run_chunks = run_chunks
        self.owners = owners
        """The ingest copies that may own streams now (this one included when it may)."""
        self.idle_s = idle_s
        self.max_bytes = max_bytes
        self.max_duration_s = max_duration_s
        self.max_streams = max_streams
        self.streams: dict[str, LiveStream] = {}
        self.counts: Counter[str] = Counter()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.runtime.subscribe(f"{subjects.AUDIO_CHUNKS_PREFIX}.*", self.on_chunk)
        await self.runtime.subscribe(f"{subjects.AUDIO_STATE_PREFIX}.*", self.on_state_request)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for stream in list(self.streams.values()):
            if stream.worker is not None:
                stream.worker.cancel()

    # ------------------------------------------------------------------ chunks in
    def owns(self, stream: str) -> bool:
        """Whether this copy is the stream's owner now."""
        owners = self.owners()
        return bool(owners) and owner_of(stream, owners) == self.runtime.instance_id

    async def on_chunk(self, msg: Msg) -> None:
        name = msg.subject.rsplit(".", 1)[-1]
        if not self.owns(name):
            if name in self.streams:  # it was ours: another copy has it now
                await self._end(self.streams.pop(name), "moved")
            return
        json = wants_json(msg.headers or {})
        try:
            if not CAMERA_ID.fullmatch(name):
                raise invalid_argument(f"audio stream id {name!r}: 1 to 64 letters, digits, '_' or '-'")
            chunk = CHUNKS.decode(msg.data, json=json)
            if chunk.seq < 0:
                raise invalid_argument(f"seq is {chunk.seq}; pieces count 0, 1, 2, ...")
            stream = self.streams.get(name) or self._open(name, chunk)
            if chunk.model != stream.info.name:
                raise invalid_argument(f"stream {name!r} runs model {stream.info.name!r}, not {chunk.model!r}")
            if chunk.seq < stream.next_seq or chunk.seq in stream.waiting:
                self.counts["duplicate_chunks"] += 1  # a piece sent twice: the first one counts
            else:
                stream.waiting[chunk.seq] = (chunk, self._decode(chunk, stream))
            stream.last_heard_s = time.monotonic()
            if len(stream.waiting) > MAX_WAITING or stream.waiting_s > MAX_WAITING_S:  # the missing one is not coming
                self.counts["gaps"] += 1
                stream.next_seq = min(stream.waiting)
            if stream.worker is None or stream.worker.done():
                stream.worker = asyncio.get_running_loop().create_task(self._work(stream))
            if msg.reply:
                ack = ACKS.encode(AudioChunkAck(stream=name, seq=chunk.seq), json=json)
                await self.runtime.publish(msg.reply, ack, _content_type(json))
        except msgspec.MsgspecError as exc:
            await self._refuse(msg, invalid_argument(f"not an audio chunk: {exc}"), json)
        except MeshError as exc:
            await self._refuse(msg, exc, json)

    def _open(self, name: str, chunk: AudioChunk) -> LiveStream:
        if len(self.streams) >= self.max_streams:
            raise MeshError(
                ErrorCode.OVERLOADED, f"this ingest copy owns {len(self.streams)} live audio streams (its limit)"
            )
        info = self.models(chunk.model)
        if not isinstance(info.profile, VadProfile):
            raise invalid_argument(f"model {info.name!r} ({info.task}) does not take audio streams")
        profile = info.profile
        stream = LiveStream(
            name=name,
            info=info,
            profile=profile,
            state=np.zeros((1, *profile.state_shape), dtype=np.float32),
            tracker=SpeechTracker(**speech_rules(profile)),
        )
        # a stream starts at the first piece its owner gets: 0 for a new stream, later when this copy takes over a
        # stream whose owner died or that moved here (it goes on from a fresh state; lower seqs count as duplicates)
        stream.next_seq = chunk.seq
        self.streams[name] = stream
        self.counts["streams_opened" if chunk.seq == 0 else "streams_taken_over"] += 1
        return stream

    async def _refuse(self, msg: Msg, error: MeshError, json: bool) -> None:
        self.counts["refused_chunks"] += 1
        if msg.reply:
            await self.runtime.publish(msg.reply, ERRORS.encode(error_reply("", error), json=json), _content_type(json))

    # ------------------------------------------------------------------ the owner's work
    async def _work(self, stream: LiveStream) -> None:
        """Take the stream's pieces in order while the next one is there; one run through the pipeline at a time."""
        while stream.next_seq in stream.waiting and self.streams.get(stream.name) is stream:
            chunk, audio = stream.waiting.pop(stream.next_seq)
            stream.next_seq += 1
            try:
                await self._take(stream, chunk, audio)
            except MeshError as exc:  # this piece is lost (counted); the stream goes on with its state as it was
                self.counts[f"failed_chunks_{exc.code.value}"] += 1
                log.warning("audio stream %s: piece %d failed: %s", stream.name, chunk.seq, exc.message)
            if chunk.end:
                self.streams.pop(stream.name, None)
                await self._end(stream, "end")
                return

    async def _take(self, stream: LiveStream, chunk: AudioChunk, audio: Audio) -> None:
        if stream.framer is None:
            stream.framer = StreamFramer(
                audio.sample_rate, stream.profile.sample_rate, stream.profile.chunk_samples,
                stream.profile.context_samples,
            )  # fmt: skip
        start_s = stream.time_s
        rows = stream.framer.push(audio.samples, last=chunk.end)
        if not len(rows):
            return
        probabilities, stream.state = await self.run_chunks(stream.name, stream.info, rows, stream.state)
        chunk_s = stream.profile.chunk_samples / stream.profile.sample_rate
        events: list[AudioEvent] = [
            VoiceActivity(
                stream=stream.name,
                seq=chunk.seq,
                start_s=round(start_s, 4),
                chunk_s=chunk_s,
                probabilities=tuple(round(float(p), 4) for p in probabilities),
            )
        ]
        for probability in probabilities:
            events += [self._event(stream, e) for e in stream.tracker.push(float(probability))]
            stream.recent.append(round(float(probability), 3))
        self.counts["chunks"] += len(rows)
        await self._publish(stream.name, events)

    async def _publish(self, name: str, events: list[AudioEvent]) -> None:
        """Events go out one message each (msgpack, like every public message; never packed), in order."""
        subject = subjects.audio_events_subject(name)
        for event in events:
            await self.runtime.nc.publish(subject, EVENTS.encode(event))

    def _decode(self, chunk: AudioChunk, stream: LiveStream) -> Audio:
        """A piece's samples (checked when it arrives, so its producer hears of a bad one at once)."""
        audio = chunk.audio
        if audio.pcm is not None:
            if audio.data or audio.sample_rate <= 0:
                raise invalid_argument("a piece is a file in data, or pcm with its sample_rate")
            if chunk.end and not audio.pcm.data:  # the producer has nothing more: the stream just ends
                decoded = Audio(np.zeros(0, dtype=np.float32), audio.sample_rate, 1)
            else:
                decoded = pcm_audio(to_array(audio.pcm), audio.sample_rate, max_duration_s=self.max_duration_s)
        else:
            decoded = decode_audio(audio.data, max_bytes=self.max_bytes, max_duration_s=self.max_duration_s)
        rates = {decoded.sample_rate} | {c.sample_rate for _, c in stream.waiting.values()}
        if stream.framer is not None:
            rates.add(stream.framer.sample_rate)
        if len(rates) > 1:
            raise invalid_argument(f"a stream keeps one sample rate; this piece is at {decoded.sample_rate:,} Hz")
        return decoded

    def _event(self, stream: LiveStream, event: SpeechEvent) -> AudioEvent:
        stream.speaking = event.kind == "speech_start"
        kind = SpeechStarted if event.kind == "speech_start" else SpeechEnded
        return kind(stream=stream.name, time_s=round(event.time_s, 4), confidence=round(event.confidence, 4))

    async def _end(self, stream: LiveStream, reason: EndReason) -> None:
        """Free the stream's state: its last speech ends (unless it moved), then ``audio_stream_ended``."""
        if stream.worker is not None and reason != "end":
            stream.worker.cancel()
        events: list[AudioEvent] = []
        if reason != "moved":
            events += [self._event(stream, e) for e in stream.tracker.finish()]
        events.append(AudioStreamEnded(stream=stream.name, reason=reason, time_s=round(stream.time_s, 4)))
        self.counts[f"streams_ended_{reason}"] += 1
        await self._publish(stream.name, events)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.idle_s / 2))
            now = time.monotonic()
            for stream in list(self.streams.values()):
                idle = now - stream.last_heard_s > self.idle_s
                if idle and (stream.worker is None or stream.worker.done()):
                    self.streams.pop(stream.name, None)
                    await self._end(stream, "quiet")

    def views(self) -> list[AudioView]:
        """The streams this copy owns, for the live page (``/streams.json``)."""
        return [
            AudioView(
                stream=stream.name,
                time_s=round(stream.time_s, 2),
                speaking=stream.speaking,
                next_seq=stream.next_seq,
                recent=list(stream.recent),
            )
            for _, stream in sorted(self.streams.items())
        ]

    def metrics(self) -> list[Metric]:
        """``natriton_ingest_audio_streams`` (owned now) and ``natriton_ingest_audio_total{what}``."""
        owned = gauge("natriton_ingest_audio_streams", "Live audio streams this copy owns.", [])
        owned.add_metric([], len(self.streams))
        counts = counter(
            "natriton_ingest_audio",
            "Live audio: streams_opened, streams_taken_over, streams_ended_<end|quiet|moved>, chunks (model "
            "chunks run), refused_chunks, duplicate_chunks, gaps, failed_chunks_<code>.",
            ["what"],
        )
        for what, n in sorted(self.counts.items()):
            counts.add_metric([what], n)
        return [owned, counts]

    # ------------------------------------------------------------------ state queries
    async def on_state_request(self, msg: Msg) -> None:
        name = msg.subject.rsplit(".", 1)[-1]
        if not msg.reply or not self.owns(name):
            return
        stream = self.streams.get(name)
        if stream is None:
            error = MeshError(ErrorCode.NOT_FOUND, f"no live audio stream {name!r}")
            await self.runtime.publish(msg.reply, ERRORS.encode(error_reply("", error)))
            return
        state = AudioStreamState(
            stream=name,
            owner=self.runtime.instance_id,
            next_seq=stream.next_seq,
            time_s=round(stream.time_s, 4),
            speaking=stream.speaking,
            waiting=len(stream.waiting),
        )
        await self.runtime.publish(msg.reply, STATES.encode(state))
