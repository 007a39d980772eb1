"""Video sources read in a thread and handed to asyncio: files, RTSP/HTTP streams, folders of images.

A :class:`SourceReader` decodes its source with PyAV in its own thread, samples it to a target fps by timestamps
(:class:`FpsSampler`), and hands RGB frames (:class:`FrameSample`) to one asyncio consumer through a bounded
:class:`FrameQueue` (``drop_oldest`` for real time, ``block`` for reliable reading)::

    reader = SourceReader(SourceSpec("rtsp://cam/1", fps=5), on_state=print)
    reader.start()
    async for sample in reader.frames():
        ...
    await reader.aclose()

States (:class:`~natriton.messages.SourceState`): ``connecting`` until the first frame, then ``live``; a network
stream that fails or just *ends* (PyAV ends the iterator without an error when the server dies) is ``lost`` and is
reopened with :class:`Backoff` (0.25 s doubling to 4 s, reset once frames flow) until it is ``live`` again; a file
or folder that ends (``loop=False``) or cannot be read is ``ended``. Frame numbers keep increasing across
reconnects and loops.

With ``SourceSpec(audio=True)`` the reader also decodes the source's first audio track, mixed to mono and resampled
to :data:`AUDIO_RATE` 16-bit PCM, and hands it to a second queue in :class:`AudioPiece` s of about
:data:`AUDIO_PIECE_S` (``async for piece in reader.audio_pieces()``): a camera's sound, for the live audio streams.
Pieces come out as the file plays (``pace``) or the stream arrives; the end of each pass or connection flushes what
is left, so no sample is held back.

``stop()`` sets a flag the thread checks between frames; a read blocked on a silent server returns within the read
timeout (PyAV's interrupt callback), so stop takes about ``read_timeout_s`` (RTSP: up to twice that), an open
blocked on a silent server up to ``open_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, Generic, Self, TypeVar
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt

from natriton.messages import SourceState
from natriton.settings import redact

if TYPE_CHECKING:
    import av

__all__ = [
    "AUDIO_PIECE_S",
    "AUDIO_RATE",
    "AudioPiece",
    "Backoff",
    "FpsSampler",
    "FrameQueue",
    "FrameSample",
    "Pacer",
    "QueuePolicy",
    "SourceKind",
    "SourceMonitor",
    "SourceReader",
    "SourceSpec",
    "SourceState",
    "SourceStats",
    "TimestampGuess",
    "source_kind",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

NETWORK_SCHEMES: Final = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt"})
IMAGE_SUFFIXES: Final = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
NETWORK_OPTIONS: Final = {"analyzeduration": "500000", "probesize": "32768"}
"""Open a stream after ~32 KB instead of probing for seconds (0.1-0.4 s instead of ~3 s)."""
AUDIO_RATE: Final = 16_000
"""Samples per second of the audio pieces (speech models' rate: no resampling further on)."""
AUDIO_PIECE_S: Final = 0.256
"""Seconds of audio per piece: 8 chunks of silero-vad's 32 ms, a message every quarter second."""
AUDIO_QUEUE_SIZE: Final = 64


# --------------------------------------------------------------------------------------------
# What is read, and what comes out
# --------------------------------------------------------------------------------------------
class SourceKind(enum.StrEnum):
    """How a source is read."""

    FILE = "file"
    NETWORK = "network"
    IMAGES = "images"


def source_kind(url: str) -> SourceKind:
    """``rtsp://``, ``http(s)://`` (…) is a network stream, a directory a folder of images, anything else a file."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in NETWORK_SCHEMES:
        return SourceKind.NETWORK
    return SourceKind.IMAGES if _local_path(url).is_dir() else SourceKind.FILE


def _local_path(url: str) -> Path:
    return Path(urlsplit(url).path) if url.startswith("file://") else Path(url)


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A source to read: a file (mp4, avi, mkv, …), an RTSP/HTTP(S) stream, or a directory of images."""

    url: str
    fps: float = 0.0
    """Frames per second to keep, by timestamps; 0 keeps every frame. A folder of images: the pace (0: as fast as
    they are consumed)."""
    loop: bool = False
    """Files and folders: start again at the end (frame numbers keep increasing)."""
    open_timeout_s: float = 5.0
    """Network: give up opening after this long."""
    read_timeout_s: float = 0.5
    """Network: a stream silent for this long is lost (and ``stop()`` interrupts a blocked read within it)."""
    pace: bool = False
    """Files: deliver frames at the file's own rate (by their timestamps), as a live camera would; otherwise as fast
    as they are consumed."""
    audio: bool = False
    """Also decode the first audio track into :class:`AudioPiece` s (a source without one: video only, noted in
    ``last_error``)."""

    def __post_init__(self) -> None:
        if self.fps < 0:
            raise ValueError(f"fps must be 0 or more, got {self.fps}")
        if self.open_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ValueError("timeouts must be positive")

    @property
    def kind(self) -> SourceKind:
        """How it is read."""
        return source_kind(self.url)


@dataclass(frozen=True, slots=True)
class FrameSample:
    """One kept frame."""

    frame_number: int
    """0, 1, 2, … over the frames kept after sampling (continues across reconnects and loops)."""
    source_index: int
    """The frame's index in the source: decoded frames since the (re)open or the start of the loop pass."""
    pts: float | None
    """The source's presentation time in seconds (None when the source has none, e.g. an RTSP stream's first
    frame, or images)."""
    captured_at: float
    """Wall-clock time the frame was decoded (``time.time()``)."""
    width: int
    height: int
    pixels: npt.NDArray[np.uint8]
    """RGB, shape (height, width, 3)."""


@dataclass(frozen=True, slots=True)
class AudioPiece:
    """A stretch of the source's audio track, mono 16-bit PCM at ``sample_rate``."""

    pts: float | None
    """The source's presentation time of its first sample in seconds (None when unknown)."""
    sample_rate: int
    samples: npt.NDArray[np.int16]
    """Shape (frames,)."""

    @property
    def duration_s(self) -> float:
        """Its length in seconds."""
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True, slots=True)
class SourceStats:
    """A source's state and counters at one moment."""

    state: SourceState
    frames_read: int = 0
    """Frames decoded (images loaded), kept or not."""
    frames_emitted: int = 0
    """Frames kept after sampling and handed to the queue."""
    frames_dropped: int = 0
    """Kept frames the queue dropped because the consumer was behind (``drop_oldest``)."""
    reconnects: int = 0
    """Times a lost network source was opened again (attempts)."""
    last_error: str = ""


# --------------------------------------------------------------------------------------------
# Pure logic: backoff, timestamps, sampling, states, the hand-off queue
# --------------------------------------------------------------------------------------------
class Backoff:
    """Reconnect delays: ``initial`` doubling (``factor``) up to ``maximum``; ``reset()`` after a success."""

    def __init__(self, initial: float = 0.25, maximum: float = 4.0, factor: float = 2.0) -> None:
        if initial <= 0 or maximum < initial or factor < 1:
            raise ValueError("need 0 < initial <= maximum and factor >= 1")
        self.initial, self.maximum, self.factor = initial, maximum, factor
        self._next = initial

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the following one."""
        delay = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return delay

    def reset(self) -> None:
        """The source works again: the next delay is ``initial``."""
        self._next = self.initial


class TimestampGuess:
    """A decoded frame's timestamp: its pts, or its dts once the pts turned out unreliable (FFmpeg's
    ``guess_correct_pts``, as ``best_effort_timestamp``). AVI files with B-frames (packed bitstream) carry pts out
    of order while their dts increase."""

    def __init__(self) -> None:
        self._faulty_pts = self._faulty_dts = 0
        self._last_pts: int | None = None
        self._last_dts: int | None = None

    def guess(self, pts: int | None, dts: int | None) -> int | None:
        """The best timestamp for a frame with these (in the stream's time base), or None when it has neither."""
        if dts is not None:
            self._faulty_dts += self._last_dts is not None and dts <= self._last_dts
            self._last_dts = dts
        elif pts is not None:
            self._last_dts = pts
        if pts is not None:
            self._faulty_pts += self._last_pts is not None and pts <= self._last_pts
            self._last_pts = pts
        elif dts is not None:
            self._last_pts = dts
        if pts is not None and (self._faulty_pts <= self._faulty_dts or dts is None):
            return pts
        return dts


class Pacer:
    """When a file's frame is due if the file plays at its own rate: anchored at the first frame of each pass (and
    again whenever the timestamps go back, e.g. a looped file)."""

    def __init__(self) -> None:
        self._origin: tuple[float, float] | None = None

    def delay(self, pts: float, now: float) -> float:
        """Seconds to wait (monotonic clock ``now``) before the frame at ``pts`` is due; 0 or less: due now."""
        if self._origin is None or pts < self._origin[1]:
            self._origin = (now, pts)
            return 0.0
        return self._origin[0] + (pts - self._origin[1]) - now


class FpsSampler:
    """Keeps frames at ``fps`` by their timestamps: a frame is kept when its time reaches the next due time.

    Times are put on one continuous timeline: a frame without a time is placed one ``step_s`` after the previous
    one, and when times jump backwards (a looped file, a new stream) or resume after frames without one, the
    timeline is re-anchored there, so such a jump neither bursts nor stalls. A frame within half a source step of
    its due time counts as due (timestamp jitter). ``fps`` 0 keeps every frame.
    """

    def __init__(self, fps: float) -> None:
        if fps < 0:
            raise ValueError(f"fps must be 0 or more, got {fps}")
        self.fps = fps
        self.period = 1.0 / fps if fps > 0 else 0.0
        self.reset()

    def reset(self) -> None:
        """Forget the timeline (the next frame is kept): after a reconnect."""
        self._last: float | None = None
        self._offset = 0.0
        self._reanchor = False
        self._due: float | None = None

    def keep(self, time_s: float | None, step_s: float | None = None) -> bool:
        """Whether to keep a frame at ``time_s`` (None: unknown); ``step_s`` is the source's frame interval."""
        if time_s is None:
            if self._last is not None and step_s is None:
                return True  # no time and no rate: nothing to sample by
            now = 0.0 if self._last is None else self._last + (step_s or 0.0)
            self._reanchor = True
        else:
            if self._last is not None and (self._reanchor or time_s + self._offset < self._last):
                self._offset = self._last + (step_s or 0.0) - time_s
            self._reanchor = False
            now = time_s + self._offset
        self._last = now
        if self.fps <= 0:
            return True
        if self._due is not None and now < self._due - (0.5 * step_s if step_s else 1e-6):
            return False
        self._due = now + self.period if self._due is None else self._due + self.period
        if self._due <= now:  # after a gap: the next one is a period from here, no burst to catch up
            self._due = now + self.period
        return True


TRANSITIONS: Final[dict[SourceState, frozenset[SourceState]]] = {
    SourceState.CONNECTING: frozenset({SourceState.LIVE, SourceState.LOST, SourceState.ENDED}),
    SourceState.LIVE: frozenset({SourceState.LOST, SourceState.ENDED}),
    SourceState.LOST: frozenset({SourceState.LIVE, SourceState.ENDED}),
    SourceState.ENDED: frozenset(),
}
"""Allowed state changes. ``lost`` lasts through the reconnect attempts, until frames flow again."""


class SourceMonitor:
    """A source's state and counters, thread-safe; ``on_state`` is called (in the changing thread) on each change."""

    def __init__(self, on_state: Callable[[SourceStats], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._on_state = on_state
        self._state = SourceState.CONNECTING
        self.frames_read = self.frames_emitted = self.reconnects = 0
        self.last_error = ""
        self.dropped: Callable[[], int] = lambda: 0
        """Where ``frames_dropped`` comes from (the queue's counter)."""

    @property
    def state(self) -> SourceState:
        """The current state."""
        return self._state

    def set_state(self, state: SourceState, error: str | None = None) -> bool:
        """Move to ``state`` (recording ``error`` if given); returns whether it changed. Raises ``ValueError`` on a
        change :data:`TRANSITIONS` does not allow."""
        with self._lock:
            if error is not None:
                self.last_error = error
            if state is self._state:
                return False
            if state not in TRANSITIONS[self._state]:
                raise ValueError(f"a source cannot go from {self._state} to {state}")
            self._state = state
        if self._on_state is not None:
            try:
                self._on_state(self.stats())
            except Exception:
                log.exception("on_state callback failed")
        return True

    def record_error(self, error: str) -> None:
        """Record an error that changes no state (e.g. a skipped image)."""
        with self._lock:
            self.last_error = error

    def count(self, *, read: int = 0, emitted: int = 0, reconnects: int = 0) -> None:
        """Add to the counters."""
        with self._lock:
            self.frames_read += read
            self.frames_emitted += emitted
            self.reconnects += reconnects

    def stats(self) -> SourceStats:
        """A consistent snapshot."""
        with self._lock:
            return SourceStats(
                state=self._state,
                frames_read=self.frames_read,
                frames_emitted=self.frames_emitted,
                frames_dropped=self.dropped(),
                reconnects=self.reconnects,
                last_error=self.last_error,
            )


class QueuePolicy(enum.StrEnum):
    """What a full queue does with a new frame."""

    DROP_OLDEST = "drop_oldest"
    """Real time: drop the oldest waiting frame (counted), never wait."""
    BLOCK = "block"
    """Reliable: the reader waits for room (so a file is read only as fast as it is consumed)."""


class FrameQueue(Generic[T]):
    """A bounded hand-off from one producer thread to one asyncio consumer; ``close()`` ends it after the items
    already in it."""

    def __init__(self, maxsize: int, policy: QueuePolicy = QueuePolicy.DROP_OLDEST) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self.policy = QueuePolicy(policy)
        self.dropped = 0
        self._items: deque[T] = deque()
        self._closed = False
        self._room = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closed

    def put(self, item: T, timeout: float | None = None) -> bool:
        """Add ``item`` (any thread). ``block``: wait for room up to ``timeout`` (None: until there is room or the
        queue is closed). Returns False when the item was not added (closed, or no room in time)."""
        with self._room:
            if self.policy is QueuePolicy.BLOCK:
                self._room.wait_for(lambda: self._closed or len(self._items) < self.maxsize, timeout)
                if len(self._items) >= self.maxsize and not self._closed:
                    return False
            if self._closed:
                return False
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
        self._wake()
        return True

    def close(self) -> None:
        """No more items (any thread): a blocked ``put`` returns False, ``get`` returns None once drained."""
        with self._room:
            self._closed = True
            self._room.notify_all()
        self._wake()

    async def get(self) -> T | None:
        """The oldest item, waiting for one; None when the queue is closed and empty."""
        while True:
            with self._room:
                if self._items:
                    item = self._items.popleft()
                    self._room.notify_all()
                    return item
                if self._closed:
                    return None
                loop = asyncio.get_running_loop()
                if self._ready is None or self._loop is not loop:
                    self._loop, self._ready = loop, asyncio.Event()
                self._ready.clear()
                ready = self._ready
            await ready.wait()

    def _wake(self) -> None:
        with self._room:
            loop, ready = self._loop, self._ready
        if loop is not None and ready is not None:
            with contextlib.suppress(RuntimeError):  # the consumer's loop is closed: nobody waits
                loop.call_soon_threadsafe(ready.set)


# --------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------
class _NoVideoError(ValueError):
    """The container has no video stream."""


class SourceReader:
    """Reads one source in a daemon thread: ``start()``, ``async for sample in frames()``, ``stop()``/``aclose()``.

    ``on_state`` is called from the reader thread with a :class:`SourceStats` on each state change (hand it to
    asyncio with ``loop.call_soon_threadsafe``); ``state`` and ``stats()`` can be read at any time. Error texts
    and logs show the URL with its credentials masked (``rtsp://***@camera/``).
    """

    def __init__(
        self,
        spec: SourceSpec,
        *,
        policy: QueuePolicy = QueuePolicy.DROP_OLDEST,
        queue_size: int = 2,
        on_state: Callable[[SourceStats], None] | None = None,
        backoff: Backoff | None = None,
        name: str = "",
    ) -> None:
        self.spec = spec
        self.kind = spec.kind
        self.name = name or str(redact("url", spec.url))
        """For logs and the thread's name (credentials in the URL masked)."""
        self.queue: FrameQueue[FrameSample] = FrameQueue(queue_size, policy)
        self.audio_queue: FrameQueue[AudioPiece] = FrameQueue(AUDIO_QUEUE_SIZE, policy)
        """The audio track's pieces (empty unless ``spec.audio``); the same policy, room for ~16 s."""
        self.monitor = SourceMonitor(on_state)
        self.monitor.dropped = lambda: self.queue.dropped
        self.backoff = backoff or Backoff()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_number = 0

    @property
    def state(self) -> SourceState:
        """The current state."""
        return self.monitor.state

    def stats(self) -> SourceStats:
        """State and counters now."""
        return self.monitor.stats()

    @property
    def running(self) -> bool:
        """Whether the reader thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the reader thread (once)."""
        if self._thread is not None:
            raise RuntimeError("a SourceReader starts once")
        self._thread = threading.Thread(target=self._run, name=f"source {self.name}", daemon=True)
        self._thread.start()

    async def frames(self) -> AsyncIterator[FrameSample]:
        """The kept frames, in order, until the source ends or the reader stops (one consumer)."""
        while (sample := await self.queue.get()) is not None:
            yield sample

    async def audio_pieces(self) -> AsyncIterator[AudioPiece]:
        """The audio track's pieces, in order, until the source ends or the reader stops (one consumer; nothing
        unless ``spec.audio``)."""
        while (piece := await self.audio_queue.get()) is not None:
            yield piece

    def stop(self, timeout: float | None = 3.0) -> bool:
        """Stop reading, end ``frames()`` and wait up to ``timeout`` s for the thread; returns whether it exited.

        A read blocked on a silent server returns within ``read_timeout_s`` (an open within ``open_timeout_s``);
        the thread then closes its container and exits by itself.
        """
        self._stopping.set()
        self.queue.close()
        self.audio_queue.close()
        if self._thread is None or self._thread is threading.current_thread():
            return True  # never started, or called from on_state: the thread exits after the callback
        self._thread.join(timeout)
        return not self._thread.is_alive()

    async def aclose(self) -> bool:
        """``stop()`` without blocking the event loop."""
        return await asyncio.to_thread(self.stop)

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ---- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            if self.kind is SourceKind.IMAGES:
                self._read_images()
            else:
                self._read_video()
        except Exception as exc:  # a bug or something unforeseen: report it, never die silently
            log.exception("source %s failed", self.name)
            with contextlib.suppress(ValueError):
                self.monitor.set_state(SourceState.ENDED, _describe(exc))
        finally:
            self.queue.close()
            self.audio_queue.close()
            log.info("source %s: reader stopped (%s)", self.name, self.monitor.state)

    def _emit(self, source_index: int, pts: float | None, pixels: npt.NDArray[np.uint8]) -> bool:
        """Hand a kept frame to the queue; False once stopping."""
        sample = FrameSample(
            frame_number=self._next_number,
            source_index=source_index,
            pts=pts,
            captured_at=time.time(),
            width=int(pixels.shape[1]),
            height=int(pixels.shape[0]),
            pixels=pixels,
        )
        while not self._stopping.is_set():
            if self.queue.put(sample, timeout=0.1):
                self._next_number += 1
                self.monitor.count(emitted=1)
                return True
            if self.queue.closed:
                return False
        return False

    def _read_video(self) -> None:
        import av

        sampler = FpsSampler(self.spec.fps)
        network = self.kind is SourceKind.NETWORK
        while not self._stopping.is_set():
            error: str | None = None
            got_frames = False
            try:
                got_frames = self._decode(sampler)
            except (av.error.FFmpegError, OSError, _NoVideoError) as exc:
                error = _describe(exc)
            if self._stopping.is_set():
                return
            if not network:
                if error is None and self.spec.loop and got_frames:
                    continue  # the file again from the start; the sampler re-anchors its timeline
                self.monitor.set_state(SourceState.ENDED, error)
                return
            self.monitor.set_state(SourceState.LOST, error or "the stream ended")
            delay = self.backoff.next_delay()
            log.info("source %s lost (%s): reconnecting in %.2f s", self.name, self.monitor.last_error, delay)
            if self._stopping.wait(delay):
                return
            self.monitor.count(reconnects=1)
            sampler.reset()

    def _decode(self, sampler: FpsSampler) -> bool:
        """Open the source and read it until it ends or the reader stops; returns whether any frame was decoded."""
        import av

        spec = self.spec
        if self.kind is SourceKind.NETWORK:
            options = dict(NETWORK_OPTIONS)
            if urlsplit(spec.url).scheme.lower().startswith("rtsp"):
                options["rtsp_transport"] = "tcp"
            container = av.open(spec.url, options=options, timeout=(spec.open_timeout_s, spec.read_timeout_s))
        else:
            container = av.open(str(_local_path(spec.url)))
        with container:
            if self._stopping.is_set():
                return False
            if not container.streams.video:
                raise _NoVideoError(f"no video stream in {self.name}")
            stream = container.streams.video[0]
            sound: _AudioTrack | None = None
            if spec.audio and container.streams.audio:
                sound = _AudioTrack(container.streams.audio[0], self._emit_audio)
            elif spec.audio:
                self.monitor.record_error(f"no audio track in {self.name}")
            rate = stream.average_rate or stream.guessed_rate
            step_s = float(1 / rate) if rate else None
            guess = TimestampGuess()
            pacer = Pacer() if spec.pace and self.kind is SourceKind.FILE else None
            index = -1
            try:
                for packet in container.demux(*([stream] if sound is None else [stream, sound.stream])):
                    if sound is not None and packet.stream is sound.stream:
                        if not sound.push(packet):
                            break
                        continue
                    for frame in packet.decode():
                        if not isinstance(frame, av.VideoFrame):
                            continue
                        index += 1
                        self.monitor.count(read=1)
                        if index == 0:
                            self.backoff.reset()
                            self.monitor.set_state(SourceState.LIVE)
                        timestamp = guess.guess(frame.pts, frame.dts)
                        time_base = frame.time_base or stream.time_base or Fraction(1)
                        pts = float(timestamp * time_base) if timestamp is not None else None
                        if pacer is not None and pts is not None:
                            wait_s = pacer.delay(pts, time.monotonic())
                            if wait_s > 0 and self._stopping.wait(wait_s):
                                return True
                        if sampler.keep(pts, step_s):
                            pixels = np.ascontiguousarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
                            if not self._emit(index, pts, pixels):
                                return True
                    if self._stopping.is_set():
                        return index >= 0
            finally:
                if sound is not None and not self._stopping.is_set():
                    sound.flush()  # the end of a pass or a connection: hand on what is left
            return index >= 0

    def _emit_audio(self, piece: AudioPiece) -> bool:
        """Hand an audio piece to its queue; False once stopping."""
        while not self._stopping.is_set():
            if self.audio_queue.put(piece, timeout=0.1):
                return True
            if self.audio_queue.closed:
                return False
        return False

    def _read_images(self) -> None:
        from PIL import Image

        folder = _local_path(self.spec.url)
        interval = 1.0 / self.spec.fps if self.spec.fps > 0 else 0.0
        started = time.monotonic()
        paced = 0
        while not self._stopping.is_set():
            try:
                paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            except OSError as exc:
                self.monitor.set_state(SourceState.ENDED, _describe(exc))
                return
            if not paths:
                self.monitor.set_state(SourceState.ENDED, f"no images in {folder}")
                return
            loaded = 0
            for index, path in enumerate(paths):
                if interval and self._stopping.wait(max(0.0, started + paced * interval - time.monotonic())):
                    return
                paced += 1
                try:
                    with Image.open(path) as image:
                        pixels = np.array(image.convert("RGB"), dtype=np.uint8)  # a writable copy
                except OSError as exc:  # unreadable or not an image: skip it
                    self.monitor.record_error(f"{path.name}: {_describe(exc)}")
                    continue
                loaded += 1
                self.monitor.count(read=1)
                self.monitor.set_state(SourceState.LIVE)
                if not self._emit(index, index * interval if interval else None, pixels):
                    return
            if not self.spec.loop or not loaded:  # no readable image: looping would spin
                self.monitor.set_state(SourceState.ENDED, None if loaded else f"no readable images in {folder}")
                return


class _AudioTrack:
    """Decodes an audio stream's packets into mono 16-bit :data:`AUDIO_RATE` pieces of :data:`AUDIO_PIECE_S`."""

    def __init__(self, stream: av.audio.stream.AudioStream, emit: Callable[[AudioPiece], bool]) -> None:
        import av

        self.stream = stream
        self.emit = emit
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
        self.piece = round(AUDIO_PIECE_S * AUDIO_RATE)
        self.pending: list[npt.NDArray[np.int16]] = []
        self.pending_frames = 0
        self.pending_pts: float | None = None
        self.bad_packets = 0

    def push(self, packet: av.Packet[av.stream.Stream]) -> bool:
        """Decode one packet (an empty one flushes the decoder); False once the reader stops. A packet the decoder
        refuses is skipped and counted, as players do (AVI files often start with a partial AC-3 frame)."""
        import av

        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            self.bad_packets += 1
            return True
        for frame in frames:
            if not isinstance(frame, av.AudioFrame):
                continue
            for out in self.resampler.resample(frame):
                if not self._add(out):
                    return False
        return True

    def flush(self) -> None:
        """Hand on everything buffered, a short last piece included."""
        for out in self.resampler.resample(None):
            self._add(out)
        self._send(self.pending_frames)
        import av

        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)

    def _add(self, frame: av.AudioFrame) -> bool:
        samples = frame.to_ndarray().reshape(-1).astype(np.int16, copy=False)
        if not self.pending_frames and frame.pts is not None and frame.time_base is not None:
            self.pending_pts = float(frame.pts * frame.time_base)
        self.pending.append(samples)
        self.pending_frames += len(samples)
        while self.pending_frames >= self.piece:
            if not self._send(self.piece):
                return False
        return True

    def _send(self, count: int) -> bool:
        if count <= 0:
            return True
        joined = np.concatenate(self.pending)
        piece = AudioPiece(pts=self.pending_pts, sample_rate=AUDIO_RATE, samples=joined[:count].copy())
        rest = joined[count:]
        self.pending = [rest] if len(rest) else []
        self.pending_frames = len(rest)
        if self.pending_pts is not None:
            self.pending_pts += count / AUDIO_RATE
        return self.emit(piece)


def _describe(exc: BaseException) -> str:
    """An error as one line for ``last_error`` (credentials in URLs masked)."""
    return str(redact("url", f"{type(exc).__name__}: {exc}"))
