"""The live page: every camera this copy reads, its newest annotated frame and its numbers, on ingest's HTTP server.

Routes (on the metrics port, :class:`natriton.metrics.MetricsServer`; camera ids are checked against
``[A-Za-z0-9_-]{1,64}`` and recording names against :data:`RECORDING_NAME` before anything else is done with them):

- ``GET /streams``: one HTML page (inline CSS and JS, nothing fetched from elsewhere) that polls ``/streams.json``
  every 500 ms and reloads a camera's image when its frame number changes.
- ``GET /streams.json``: per camera: source state, fps, end-to-end latency (p50/p95), frames sent, answered,
  reused by the change gate, dropped, errors, the newest frame's number and objects (:class:`StreamsView`).
- ``GET /streams/<camera>.jpg[?n=<frame>]``: that frame (without ``n``: the newest) with boxes and track ids drawn,
  as JPEG; encoded in a thread when first asked for, then kept with the frame. A frame no longer among the last
  :data:`FRAMES_KEPT` answers 410, so an image never goes with another frame's numbers and boxes.
- ``POST /streams/<camera>/record?seconds=N`` (1..600): record the camera's annotated frames for N seconds into an
  mp4 (PyAV, libx264 or mpeg4, in a thread) in ``NATRITON_RECORDINGS_DIR``; answers ``{"file", "url"}``.
- ``GET /recordings``: the finished recordings and those in progress; ``GET /recordings/<name>``: one (409 while it
  is still being recorded, 404 when there is no such finished file).

Only the copy that owns a camera has its frames: ``natriton stream ls`` shows each camera's page
(:attr:`natriton.messages.StreamStatus.page`).

With ``NATRITON_LIVE_TOKEN_FILE`` set, every route above answers 401 unless the query carries ``token=<token>``
(compared in constant time); the page passes its own ``?token=`` on to everything it fetches. Recordings are kept
``NATRITON_RECORDINGS_MAX_AGE_DAYS`` and, oldest first, within ``NATRITON_RECORDINGS_MAX_BYTES``
(:func:`sweep_recordings`: at start, after each recording, hourly).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import io
import itertools
import logging
import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

import msgspec
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from natriton.messages import StreamSource
from natriton.metrics import Request, Response, RouteHandler
from natriton.settings import SettingsError, read_secret, redact
from natriton.streams import CAMERA_ID
from natriton.video.source import SourceStats
from natriton_client.protocol import FrameResult, TrackedObject
from natriton_ingest.cameras import CameraCounters
from natriton_ingest.settings import Settings

if TYPE_CHECKING:
    import av  # imported where used: only recordings need PyAV here

log = logging.getLogger(__name__)

RECORDING_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,128}\.mp4")
"""A recording's file name: no dots but the extension's, no slashes (used with ``fullmatch``)."""
BOX_COLOUR: Final = (255, 0, 255)
"""The colour of every box and label background (magenta: rare in real footage, easy to find in a screenshot)."""
LABEL_TEXT_COLOUR: Final = (0, 0, 0)
JPEG_QUALITY: Final = 85
FRAMES_KEPT: Final = 4
"""Newest frames kept per camera, so the page gets the very frame whose numbers it shows."""
MAX_RECORD_SECONDS: Final = 600
MAX_ACTIVE_RECORDINGS: Final = 4
POLL_MS: Final = 500
SWEEP_INTERVAL_S: Final = 3600.0
"""How often the recordings folder is swept (besides at start and after each recording)."""
STALE_PART_S: Final = 3600.0
"""A ``.part`` file unchanged this long was left by a process that died while recording (one lasts 600 s at most)."""
LOCAL_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})
"""Metrics hosts that only this machine reaches: no warning about an open page there."""

JSON: Final = "application/json"
HTML: Final = "text/html; charset=utf-8"
TEXT: Final = "text/plain; charset=utf-8"
UNAUTHORIZED: Final[Response] = (401, TEXT, b"unauthorized\n")
"""The answer to a request without the right token (no detail)."""


class LiveCamera(Protocol):
    """What the page reads of a camera worker (:class:`natriton_ingest.cameras.CameraWorker`)."""

    @property
    def source(self) -> StreamSource: ...

    @property
    def counters(self) -> CameraCounters: ...

    def stats(self) -> SourceStats: ...


# ---------------------------------------------------------------------------------------------------- drawing
def is_camera_id(value: str) -> bool:
    """True for a valid camera id (``[A-Za-z0-9_-]{1,64}``, nothing else)."""
    return CAMERA_ID.fullmatch(value) is not None


def is_recording_name(value: str) -> bool:
    """True for a name this page could have given a recording (no path parts, no traversal)."""
    return RECORDING_NAME.fullmatch(value) is not None


def box_width(width: int, height: int) -> int:
    """Line width of the boxes: thicker on bigger frames (4 px on 720x528)."""
    return max(2, round(min(width, height) / 130))


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, ValueError, TypeError):  # a Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def label_of(obj: TrackedObject) -> str:
    """The text drawn above an object's box."""
    return f"#{obj.track_id} {obj.label} {obj.score:.2f}"


def annotate(pixels: npt.NDArray[np.uint8], result: FrameResult) -> Image.Image:
    """The frame with each object's box and ``#track label score`` drawn in :data:`BOX_COLOUR`."""
    image = Image.fromarray(pixels, "RGB")
    if not result.objects:
        return image
    draw = ImageDraw.Draw(image)
    width = box_width(image.width, image.height)
    font = _font(max(12, image.height // 30))
    for obj in result.objects:
        x1, y1, x2, y2 = (round(v) for v in obj.box)
        x1, x2 = sorted((max(0, min(image.width - 1, x1)), max(0, min(image.width - 1, x2))))
        y1, y2 = sorted((max(0, min(image.height - 1, y1)), max(0, min(image.height - 1, y2))))
        draw.rectangle((x1, y1, x2, y2), outline=BOX_COLOUR, width=width)
        text = label_of(obj)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        text_w, text_h = right - left + 6, bottom - top + 4
        ty = y1 - text_h if y1 - text_h >= 0 else min(y1 + width, image.height - text_h)
        draw.rectangle((x1, ty, x1 + text_w, ty + text_h), fill=BOX_COLOUR)
        draw.text((x1 + 3 - left, ty + 2 - top), text, fill=LABEL_TEXT_COLOUR, font=font)
    return image


def render_jpeg(pixels: npt.NDArray[np.uint8], result: FrameResult, quality: int = JPEG_QUALITY) -> bytes:
    """The annotated frame as JPEG (runs in a thread)."""
    out = io.BytesIO()
    annotate(pixels, result).save(out, format="JPEG", quality=quality)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------------- numbers
class FrameView(msgspec.Struct, frozen=True, kw_only=True):
    """The newest frame of a camera: what the image at ``image`` shows."""

    number: int
    width: int
    height: int
    captured_ms: int
    latency_ms: int
    """This frame's end-to-end latency (capture to result)."""
    reused: bool
    error: str | None
    objects: tuple[TrackedObject, ...]


class RecordingView(msgspec.Struct, frozen=True, kw_only=True):
    """A recording in progress."""

    file: str
    url: str
    camera: str
    seconds_left: float
    frames: int


class CameraView(msgspec.Struct, frozen=True, kw_only=True):
    """One camera on the page."""

    camera: str
    state: str
    """The source's state: connecting, live, lost or ended."""
    mode: str
    model: str
    fps: float
    """Results per second over the last few seconds."""
    latency_p50_ms: float
    latency_p95_ms: float
    sent: int
    answered: int
    reused: int
    dropped: int
    errors: int
    published: int
    gate_savings: float
    """Share of frames the change gate spared from inference: reused / (answered + reused)."""
    frames_read: int
    frames_emitted: int
    reconnects: int
    last_error: str
    frame: FrameView | None
    image: str | None
    """Where the annotated frame is (``/streams/<camera>.jpg?n=<frame>``); None before the first result."""
    recording: RecordingView | None


class AudioView(msgspec.Struct, frozen=True, kw_only=True):
    """One live audio stream this copy owns, on the page."""

    stream: str
    time_s: float
    """Seconds of the stream analysed so far."""
    speaking: bool
    next_seq: int
    recent: list[float]
    """The speech probability of each of the latest 32 ms chunks (about 3 s), oldest first."""


class StreamsView(msgspec.Struct, frozen=True, kw_only=True):
    """``/streams.json``."""

    owner: str
    updated_ms: int
    poll_ms: int
    cameras: list[CameraView]
    audio: list[AudioView] = msgspec.field(default_factory=list)


def gate_savings(counters: CameraCounters) -> float:
    """reused / (answered + reused); 0 before any frame."""
    total = counters.answered + counters.reused
    return counters.reused / total if total else 0.0


def frame_view(result: FrameResult) -> FrameView:
    return FrameView(
        number=result.frame_number,
        width=result.width,
        height=result.height,
        captured_ms=result.captured_ms,
        latency_ms=result.published_ms - result.captured_ms,
        reused=result.reused,
        error=None if result.error is None else result.error.value,
        objects=result.objects,
    )


def camera_view(
    camera: str, worker: LiveCamera, newest: FrameResult | None, recording: RecordingView | None
) -> CameraView:
    """One camera's numbers, from its worker's counters and source stats and the newest result."""
    counters, stats = worker.counters, worker.stats()
    return CameraView(
        camera=camera,
        state=str(stats.state.value),
        mode=str(worker.source.mode.value),
        model=worker.source.model,
        fps=round(counters.fps(), 2),
        latency_p50_ms=round(counters.latency_ms(0.5), 1),
        latency_p95_ms=round(counters.latency_ms(0.95), 1),
        sent=counters.sent,
        answered=counters.answered,
        reused=counters.reused,
        dropped=counters.dropped,
        errors=counters.errors,
        published=counters.published,
        gate_savings=round(gate_savings(counters), 4),
        frames_read=stats.frames_read,
        frames_emitted=stats.frames_emitted,
        reconnects=stats.reconnects,
        last_error=str(redact("url", stats.last_error)),
        frame=None if newest is None else frame_view(newest),
        image=None if newest is None else f"/streams/{camera}.jpg?n={newest.frame_number}",
        recording=recording,
    )


# ---------------------------------------------------------------------------------------------------- recording
@functools.lru_cache(maxsize=1)
def video_encoder() -> str:
    """libx264 when the PyAV wheel has it (it does: FFmpeg 8 with x264), else FFmpeg's own mpeg4."""
    import av

    try:
        av.codec.Codec("libx264", "w")
    except Exception:
        return "mpeg4"
    return "libx264"


def recording_rate(fps: float) -> Fraction:
    """The mp4's frame rate: the camera's measured result rate, within 1..120 (10 before it is known)."""
    if fps <= 0:
        fps = 10.0
    return Fraction(min(120.0, max(1.0, fps))).limit_denominator(1001)


class Recording:
    """Annotated frames of one camera into an mp4, for a number of seconds, in a thread of its own.

    The event loop only hands frames over (:meth:`offer`, never blocks: a full queue skips the frame); the thread
    draws, encodes and writes ``<name>.part``, and renames it to ``<name>`` when done; then ``on_done`` is called (in
    that thread).
    """

    QUEUE_FRAMES = 64

    def __init__(
        self,
        camera: str,
        path: Path,
        seconds: float,
        rate: Fraction,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self.camera = camera
        self.path = path
        self.rate = rate
        self.until = time.monotonic() + seconds
        self.frames = 0
        self.skipped = 0
        self.error = ""
        self.done = threading.Event()
        self._on_done = on_done
        self._queue: queue.Queue[tuple[FrameResult, npt.NDArray[np.uint8]] | None] = queue.Queue(self.QUEUE_FRAMES)
        self._thread = threading.Thread(target=self._run, name=f"record {camera}", daemon=True)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def partial(self) -> Path:
        return self.path.with_name(self.path.name + ".part")

    def seconds_left(self) -> float:
        return max(0.0, self.until - time.monotonic())

    def start(self) -> None:
        self._thread.start()

    def offer(self, result: FrameResult, pixels: npt.NDArray[np.uint8]) -> None:
        """Hand one released frame over (on the event loop; never waits)."""
        if self.done.is_set() or time.monotonic() >= self.until:
            return
        try:
            self._queue.put_nowait((result, pixels))
        except queue.Full:
            self.skipped += 1

    def stop(self) -> None:
        """Finish now with what was recorded."""
        self.until = 0.0
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        import av

        output: tuple[av.container.OutputContainer, av.video.stream.VideoStream] | None = None
        try:
            while True:
                remaining = self.until - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=min(remaining, 0.5))
                except queue.Empty:
                    continue
                if item is None:
                    break
                result, pixels = item
                frame = av.VideoFrame.from_ndarray(np.asarray(annotate(pixels, result)), format="rgb24")
                if output is None:
                    output = self._open(frame.width & ~1, frame.height & ~1)
                container, stream = output
                if (frame.width, frame.height) != (stream.width, stream.height):
                    frame = frame.reformat(stream.width, stream.height)
                frame.pts = self.frames
                for packet in stream.encode(frame):
                    container.mux(packet)
                self.frames += 1
            if output is not None:
                container, stream = output
                for packet in stream.encode():
                    container.mux(packet)
                output = None
                container.close()
                self.partial.replace(self.path)
            else:
                self.error = "no frames arrived while recording"
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("recording %s failed", self.name)
        finally:
            if output is not None:
                with contextlib.suppress(Exception):
                    output[0].close()
            with contextlib.suppress(OSError):
                self.partial.unlink(missing_ok=True)
            self.done.set()
            if self._on_done is not None:
                self._on_done()

    def _open(self, width: int, height: int) -> tuple[av.container.OutputContainer, av.video.stream.VideoStream]:
        """The mp4 (``<name>.part``) and its video stream at the recording's rate."""
        import av

        container = av.open(str(self.partial), "w", format="mp4", options={"movflags": "+faststart"})
        try:
            stream = container.add_stream(video_encoder(), rate=self.rate)
            assert isinstance(stream, av.video.stream.VideoStream)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            if stream.codec_context.name == "libx264":
                stream.options = {"preset": "veryfast"}
        except BaseException:
            container.close()
            raise
        return container, stream


# ---------------------------------------------------------------------------------------------------- retention
class Swept(NamedTuple):
    """What one sweep of the recordings folder deleted."""

    files: list[str]
    bytes: int


def sweep_recordings(
    folder: Path, *, max_age_s: float, max_bytes: int, busy: frozenset[str] = frozenset(), now: float | None = None
) -> Swept:
    """Delete finished recordings older than ``max_age_s``, then the oldest until the folder's recordings (those in
    progress included) take at most ``max_bytes``.

    Never deletes a recording in progress (its ``.part``, or a name in ``busy``), a symlink or anything not named
    like a recording; a ``.part`` unchanged for :data:`STALE_PART_S` is a dead process's and goes.
    """
    now = time.time() if now is None else now
    finished: list[tuple[float, str, int]] = []
    total, deleted, freed = 0, [], 0
    try:
        with os.scandir(folder) as scan:
            entries = list(scan)
    except FileNotFoundError:
        return Swept([], 0)
    for entry in entries:
        name = entry.name
        part = name.endswith(".part") and is_recording_name(name.removesuffix(".part"))
        if not (part or is_recording_name(name)) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if part and name.removesuffix(".part") not in busy and now - stat.st_mtime > STALE_PART_S:
            if _delete(folder / name):
                deleted.append(name)
                freed += stat.st_size
            continue
        total += stat.st_size
        if not part and name not in busy:
            finished.append((stat.st_mtime, name, stat.st_size))
    for mtime, name, size in sorted(finished):
        if now - mtime <= max_age_s and total <= max_bytes:
            break  # this one and every newer one stay
        if _delete(folder / name):
            deleted.append(name)
            freed += size
            total -= size
    return Swept(deleted, freed)


def _delete(path: Path) -> bool:
    """True when ``path`` is gone now."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot delete recording %s: %s", path, exc)
        return False
    return True


# ---------------------------------------------------------------------------------------------------- the page
@dataclass
class Shot:
    """One released frame, its result, and its JPEG once someone asked for it."""

    result: FrameResult
    pixels: npt.NDArray[np.uint8]
    jpeg: asyncio.Future[bytes] | None = None


@dataclass
class _Ring:
    shots: deque[Shot] = field(default_factory=lambda: deque(maxlen=FRAMES_KEPT))


class LiveView:
    """Keeps each camera's newest frames (the :attr:`IngestApp.on_frame` hook) and answers the page's routes."""

    def __init__(
        self,
        cameras: Callable[[], Mapping[str, LiveCamera]],
        recordings_dir: Path,
        *,
        owner: str = "",
        token: str = "",
        max_age_s: float = 7 * 86400.0,
        max_bytes: int = 10 * 1024**3,
    ) -> None:
        self.cameras = cameras
        """The cameras this copy reads now (by id)."""
        self.recordings_dir = recordings_dir
        self.owner = owner
        self.max_age_s = max_age_s
        """Finished recordings older than this are deleted."""
        self.max_bytes = max_bytes
        """The recordings folder's size limit (the oldest finished recordings go first)."""
        self.frames: dict[str, _Ring] = {}
        self.recordings: dict[str, Recording] = {}
        """Recordings of this process by file name (finished ones stay, for their outcome)."""
        self.swept_files = 0
        """Recordings deleted by the retention sweeps so far."""
        self._token = token.encode()
        self._names = itertools.count(1)
        self._sweep_lock = asyncio.Lock()
        self._sweeps: set[asyncio.Task[Swept]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False
        self.audio_streams: Callable[[], list[AudioView]] = list
        """The live audio streams this copy owns (set by the app)."""

    @classmethod
    def from_settings(
        cls, cameras: Callable[[], Mapping[str, LiveCamera]], settings: Settings, *, owner: str = ""
    ) -> LiveView:
        """The page as ``settings`` say: recordings folder and retention, and the token (read from
        ``live_token_file`` now; an unreadable or empty file raises ``SettingsError``). Warns once when there is no
        token and the page is open to the network."""
        token = ""
        if settings.live_token_file:
            token = read_secret(settings.live_token_file)
            if not token:
                raise SettingsError(f"the live page's token file {settings.live_token_file} is empty")
        elif settings.metrics_port and settings.metrics_host not in LOCAL_HOSTS:
            log.warning(
                "the live page (/streams) and recordings are open to anyone who reaches port %d: "
                "set NATRITON_LIVE_TOKEN_FILE to require a token",
                settings.metrics_port,
            )
        return cls(
            cameras,
            settings.recordings_path(),
            owner=owner,
            token=token,
            max_age_s=settings.recordings_max_age_days * 86400,
            max_bytes=settings.recordings_max_bytes,
        )

    # ------------------------------------------------------------------ retention
    async def start(self) -> None:
        """Sweep the recordings folder now, then every :data:`SWEEP_INTERVAL_S`."""
        await self.sweep()
        self._sweeper = asyncio.create_task(self._sweep_every(SWEEP_INTERVAL_S), name="recordings retention")

    async def _sweep_every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sweep()
            except Exception:
                log.exception("recordings sweep failed")

    async def sweep(self) -> Swept:
        """Apply the retention limits to the recordings folder (:func:`sweep_recordings`, in a thread; one sweep at
        a time; this process's recordings in progress are never touched)."""
        async with self._sweep_lock:
            busy = frozenset(r.name for r in self.recordings.values() if not r.done.is_set())
            try:
                swept = await asyncio.to_thread(
                    sweep_recordings, self.recordings_dir, max_age_s=self.max_age_s, max_bytes=self.max_bytes, busy=busy
                )
            except OSError as exc:
                log.warning("cannot sweep the recordings in %s: %s", self.recordings_dir, exc)
                return Swept([], 0)
        if swept.files:
            self.swept_files += len(swept.files)
            log.info(
                "deleted %d recordings (%d bytes; older than %g days, or over %d bytes in all): %s",
                len(swept.files), swept.bytes, self.max_age_s / 86400, self.max_bytes, ", ".join(swept.files),
            )  # fmt: skip
        return swept

    def _recording_done(self, loop: asyncio.AbstractEventLoop) -> None:
        """A recording's thread ended: sweep soon, on the event loop."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the next start sweeps
            loop.call_soon_threadsafe(self._sweep_soon)

    def _sweep_soon(self) -> None:
        if self._closing:
            return
        task = asyncio.create_task(self.sweep(), name="recordings sweep")
        self._sweeps.add(task)
        task.add_done_callback(self._sweeps.discard)

    # ------------------------------------------------------------------ the hook
    def on_frame(self, camera: str, result: FrameResult, pixels: npt.NDArray[np.uint8]) -> None:
        """Keep the frame (nothing is drawn or encoded until someone asks) and feed a recording of the camera."""
        ring = self.frames.get(camera)
        if ring is None:
            ring = self.frames[camera] = _Ring()
        ring.shots.append(Shot(result, pixels))
        for recording in self.recordings.values():
            if recording.camera == camera:
                recording.offer(result, pixels)

    def newest(self, camera: str) -> FrameResult | None:
        ring = self.frames.get(camera)
        return ring.shots[-1].result if ring is not None and ring.shots else None

    # ------------------------------------------------------------------ routes
    def routes(self) -> dict[str, RouteHandler]:
        """What to add to ``runtime.http_routes``."""
        return {"/streams": self.handle, "/streams.json": self.handle, "/recordings": self.handle}

    def authorized(self, request: Request) -> bool:
        """True without a token, else when the query's ``token`` is it (compared in constant time)."""
        if not self._token:
            return True
        return hmac.compare_digest(request.query.get("token", "").encode(), self._token)

    async def handle(self, request: Request) -> Response:
        """Every route of the page (see the module's docstring); 401 without the token when one is set."""
        if not self.authorized(request):
            return UNAUTHORIZED
        path, method = request.path, request.method
        reading = method in ("GET", "HEAD")
        if path in ("/streams", "/streams/"):
            return (200, HTML, PAGE) if reading else _not_allowed()
        if path == "/streams.json":
            return (200, JSON, msgspec.json.encode(self.view())) if reading else _not_allowed()
        if path == "/recordings":
            return (200, JSON, msgspec.json.encode(self.recordings_list())) if reading else _not_allowed()
        if path.startswith("/recordings/"):
            return await self.recording_file(path.removeprefix("/recordings/")) if reading else _not_allowed()
        if path.startswith("/streams/"):
            rest = path.removeprefix("/streams/")
            if rest.endswith(".jpg"):
                return (
                    await self.jpeg(rest.removesuffix(".jpg"), request.query.get("n", ""))
                    if reading
                    else (_not_allowed())
                )
            if rest.endswith("/record"):
                if method != "POST":
                    return 405, TEXT, b"use POST\n"
                return self.record(rest.removesuffix("/record"), request.query.get("seconds", "10"))
        return 404, TEXT, b"not found: see /streams\n"

    def view(self) -> StreamsView:
        """``/streams.json``; forgets frames of cameras this copy no longer reads."""
        cameras = dict(self.cameras())
        for gone in set(self.frames) - set(cameras):
            del self.frames[gone]
        active = {r.camera: r for r in self.recordings.values() if not r.done.is_set()}
        views = [
            camera_view(camera, worker, self.newest(camera), _recording_view(active.get(camera)))
            for camera, worker in sorted(cameras.items())
        ]
        return StreamsView(
            owner=self.owner,
            updated_ms=int(time.time() * 1000),
            poll_ms=POLL_MS,
            cameras=views,
            audio=self.audio_streams(),
        )

    async def jpeg(self, camera: str, wanted: str) -> Response:
        """The annotated frame ``wanted`` of ``camera`` (the newest when ``wanted`` is empty; 410 once it is gone)."""
        if not is_camera_id(camera):
            return 404, TEXT, b"no such camera\n"
        ring = self.frames.get(camera)
        if ring is None or not ring.shots:
            return 404, TEXT, b"no frame of this camera here\n"
        shot: Shot | None = ring.shots[-1]
        if wanted:
            shot = next((s for s in ring.shots if str(s.result.frame_number) == wanted), None)
        if shot is None:
            return 410, TEXT, b"that frame is no longer kept: ask for the newest\n"
        if shot.jpeg is None:
            shot.jpeg = asyncio.get_running_loop().run_in_executor(None, render_jpeg, shot.pixels, shot.result)
        return 200, "image/jpeg", await asyncio.shield(shot.jpeg)

    def record(self, camera: str, seconds_text: str) -> Response:
        """Start recording ``camera``'s annotated frames for ``seconds`` (1..600)."""
        if not is_camera_id(camera):
            return _json(404, {"error": "no such camera"})
        worker = self.cameras().get(camera)
        if worker is None:
            return _json(404, {"error": f"camera {camera} is not read by this ingest copy"})
        try:
            seconds = int(seconds_text)
        except ValueError:
            seconds = 0
        if not 1 <= seconds <= MAX_RECORD_SECONDS:
            return _json(400, {"error": f"seconds must be a whole number from 1 to {MAX_RECORD_SECONDS}"})
        active = [r for r in self.recordings.values() if not r.done.is_set()]
        if any(r.camera == camera for r in active):
            return _json(409, {"error": f"camera {camera} is being recorded already"})
        if len(active) >= MAX_ACTIVE_RECORDINGS:
            return _json(409, {"error": f"{MAX_ACTIVE_RECORDINGS} recordings at once at most"})
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        name = f"{camera}-{stamp}-{next(self._names)}.mp4"
        on_done = functools.partial(self._recording_done, asyncio.get_running_loop())
        recording = Recording(
            camera, self.recordings_dir / name, seconds, recording_rate(worker.counters.fps()), on_done
        )
        self._forget_old_recordings()
        self.recordings[name] = recording
        recording.start()
        log.info("recording %s for %d s at %s fps into %s", camera, seconds, recording.rate, recording.path)
        return _json(200, {"file": name, "url": f"/recordings/{name}", "seconds": seconds})

    def _forget_old_recordings(self, keep: int = 100) -> None:
        done = [name for name, r in self.recordings.items() if r.done.is_set()]
        for name in done[: max(0, len(done) - keep)]:
            del self.recordings[name]

    def recordings_list(self) -> dict[str, object]:
        """The finished recordings in the folder (newest first) and those in progress."""
        files: list[dict[str, object]] = []
        if self.recordings_dir.is_dir():
            found = [p for p in self.recordings_dir.iterdir() if is_recording_name(p.name) and p.is_file()]
            for path in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)[:500]:
                stat = path.stat()
                files.append(
                    {"file": path.name, "url": f"/recordings/{path.name}", "bytes": stat.st_size,
                     "modified_ms": int(stat.st_mtime * 1000)}
                )  # fmt: skip
        active = [msgspec.to_builtins(_recording_view(r)) for r in self.recordings.values() if not r.done.is_set()]
        failed = [{"file": r.name, "camera": r.camera, "error": r.error} for r in self.recordings.values() if r.error]
        return {"recordings": files, "active": active, "failed": failed}

    async def recording_file(self, name: str) -> Response:
        """A finished recording's bytes (read in a thread)."""
        if not is_recording_name(name):
            return 404, TEXT, b"no such recording\n"
        recording = self.recordings.get(name)
        if recording is not None and not recording.done.is_set():
            return _json(409, {"error": "still recording", "seconds_left": round(recording.seconds_left(), 1)})
        if recording is not None and recording.error:
            return _json(404, {"error": f"recording failed: {recording.error}"})
        path = self.recordings_dir / name
        if path.parent != self.recordings_dir or path.is_symlink() or not path.is_file():
            return _json(404, {"error": "no such recording"})
        data = await asyncio.to_thread(path.read_bytes)
        return 200, "video/mp4", data

    async def close(self) -> None:
        """Stop sweeping and finish every recording (what was recorded so far is kept)."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        active = [r for r in self.recordings.values() if not r.done.is_set()]
        for recording in active:
            recording.stop()
        for recording in active:
            await asyncio.to_thread(recording.join, 10.0)
        if self._sweeps:
            await asyncio.gather(*self._sweeps, return_exceptions=True)


def _recording_view(recording: Recording | None) -> RecordingView | None:
    if recording is None:
        return None
    return RecordingView(
        file=recording.name,
        url=f"/recordings/{recording.name}",
        camera=recording.camera,
        seconds_left=round(recording.seconds_left(), 1),
        frames=recording.frames,
    )


def _json(status: int, document: Mapping[str, object]) -> Response:
    return status, JSON, msgspec.json.encode(document)


def _not_allowed() -> Response:
    return 405, TEXT, b"only GET and HEAD\n"


PAGE: Final = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Natriton - live cameras</title>
<style>
  :root { color-scheme: dark; --fg: #e8e8ea; --dim: #9a9aa3; --bg: #121216; --card: #1c1c22; --accent: #ff00ff; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, sans-serif; background: var(--bg); color: var(--fg); }
  header { display: flex; gap: 1rem; align-items: baseline; padding: .75rem 1rem; border-bottom: 1px solid #2a2a33; }
  header h1 { font-size: 1.1rem; margin: 0; }
  header .dim { color: var(--dim); }
  #conn.down { color: #ff6b6b; }
  main { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 1rem; padding: 1rem; }
  .card { background: var(--card); border-radius: 8px; overflow: hidden; }
  .card h2 { font-size: 1rem; margin: 0; padding: .5rem .75rem; display: flex; gap: .5rem; align-items: center; }
  .card img { display: block; width: 100%; height: auto; background: #000; aspect-ratio: 4 / 3; }
  .card img.loaded { aspect-ratio: auto; }
  .state { font-size: .8rem; padding: .1rem .5rem; border-radius: 999px; background: #333; }
  .state.live { background: #1f6f3a; } .state.connecting { background: #7a6a12; }
  .state.lost { background: #8a2020; } .state.ended { background: #444; }
  dl { display: grid; grid-template-columns: repeat(4, 1fr); gap: .25rem .75rem; margin: 0; padding: .5rem .75rem; }
  dt { color: var(--dim); font-size: .75rem; } dd { margin: 0 0 .25rem; font-variant-numeric: tabular-nums; }
  .foot { display: flex; gap: .75rem; align-items: center; padding: 0 .75rem .6rem; color: var(--dim); }
  .foot .error { color: #ff6b6b; }
  button { background: #2a2a33; color: var(--fg); border: 1px solid #3a3a44; border-radius: 4px; padding: .2rem .6rem; }
  a { color: #d68cff; }
  #empty { padding: 3rem 1rem; text-align: center; color: var(--dim); }
  #empty code { color: var(--fg); }
  #audio { padding: 0 1rem 1rem; } #audio h2 { font-size: 1rem; color: var(--dim); }
  .voice { display: flex; gap: .75rem; align-items: center; background: var(--card); border-radius: 8px;
           padding: .4rem .75rem; margin-bottom: .4rem; }
  .voice b { min-width: 10rem; } .voice canvas { background: #000; border-radius: 4px; }
  .talk { font-size: .8rem; padding: .1rem .5rem; border-radius: 999px; background: #333; }
  .talk.on { background: #1f6f3a; }
</style>
</head>
<body>
<header>
  <h1>Natriton &middot; live cameras</h1>
  <span class="dim" id="owner"></span>
  <span class="dim" id="conn">connecting&hellip;</span>
</header>
<main id="cameras"></main>
<section id="audio" hidden><h2>Live audio (speech probability of the last ~3 s)</h2><div id="voices"></div></section>
<div id="empty" hidden>
  <p><strong>No cameras</strong> are read by this ingest copy.</p>
  <p>Add one with <code>natriton stream add CAMERA URL</code>; <code>natriton stream ls</code> shows which copy's page
  shows each camera.</p>
</div>
<script>
"use strict";
const cards = new Map();
const BASE = location.pathname.slice(0, Math.max(0, location.pathname.lastIndexOf("/streams")));  // a proxy's prefix
const TOKEN = new URLSearchParams(location.search).get("token");  // NATRITON_LIVE_TOKEN_FILE's
function withToken(url) {  // what this page fetches carries its own ?token=
  return TOKEN === null ? url : url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
}
window.natritonShown = {};
const $ = (tag, cls, text) => {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text !== undefined) el.textContent = text;
  return el;
};
const STATS = [
  ["fps", "fps"], ["p50", "latency p50"], ["p95", "latency p95"], ["frame", "frame"],
  ["objects", "objects"], ["answered", "answered"], ["savings", "gate savings"], ["reused", "reused"],
  ["dropped", "dropped"], ["errors", "errors"], ["sent", "sent"], ["reconnects", "reconnects"],
];

function makeCard(camera) {
  const card = $("section", "card");
  card.dataset.camera = camera;
  const title = $("h2");
  title.append($("span", "camera", camera), $("span", "state", "?"), $("span", "mode dim"));
  const img = $("img");
  img.alt = "camera " + camera;
  const dl = $("dl");
  const values = {};
  for (const [key, label] of STATS) {
    const wrap = $("div");
    const dd = $("dd", key, "-");
    wrap.append($("dt", "", label), dd);
    dl.append(wrap);
    values[key] = dd;
  }
  const foot = $("div", "foot");
  const button = $("button", "", "record 10 s");
  const note = $("span", "note");
  const error = $("span", "error");
  foot.append(button, note, error);
  button.addEventListener("click", () => record(camera, button, note));
  card.append(title, img, dl, foot);
  const state = { card, img, values, title, note, error, requested: -1, loading: false, pending: null, shownUrl: "" };
  img.addEventListener("load", () => {
    state.loading = false;
    img.classList.add("loaded");
    if (state.shownUrl) URL.revokeObjectURL(state.shownUrl);
    state.shownUrl = img.src;
    if (state.pending) {
      img.dataset.frame = String(state.pending.number);
      window.natritonShown[camera] = state.pending;
    }
  });
  img.addEventListener("error", () => { state.loading = false; });
  return state;
}

// Fetch the frame first and show it only once it has arrived: a frame already gone (410) leaves the last one on
// screen, with its own numbers, until the next poll names a newer frame.
async function loadFrame(s, frame, url) {
  s.loading = true;
  try {
    const r = await fetch(withToken(url), { cache: "no-store" });
    if (!r.ok) { s.loading = false; return; }
    const blob = await r.blob();
    s.pending = frame;
    s.img.width = frame.width;
    s.img.height = frame.height;
    s.img.src = URL.createObjectURL(blob);
  } catch (e) { s.loading = false; }
}

async function record(camera, button, note) {
  button.disabled = true;
  try {
    const url = BASE + "/streams/" + encodeURIComponent(camera) + "/record?seconds=10";
    const r = await fetch(withToken(url), { method: "POST" });
    const body = await r.json();
    if (!r.ok) { note.textContent = body.error || ("HTTP " + r.status); button.disabled = false; return; }
    note.textContent = "recording " + body.file + "\\u2026";
    setTimeout(() => {
      note.textContent = "";
      const a = $("a", "", body.file);
      a.href = withToken(BASE + body.url);
      a.download = body.file;
      note.append(a);
      button.disabled = false;
    }, 11500);
  } catch (e) { note.textContent = String(e); button.disabled = false; }
}

function show(cam) {
  let s = cards.get(cam.camera);
  if (!s) {
    s = makeCard(cam.camera);
    cards.set(cam.camera, s);
    document.getElementById("cameras").append(s.card);
  }
  const badge = s.title.querySelector(".state");
  badge.textContent = cam.state;
  badge.className = "state " + cam.state;
  s.title.querySelector(".mode").textContent = cam.mode + " \\u00b7 " + cam.model;
  const v = s.values;
  v.fps.textContent = cam.fps.toFixed(1);
  v.fps.dataset.value = String(cam.fps);
  v.p50.textContent = cam.latency_p50_ms.toFixed(0) + " ms";
  v.p95.textContent = cam.latency_p95_ms.toFixed(0) + " ms";
  v.frame.textContent = cam.frame ? String(cam.frame.number) : "-";
  v.objects.textContent = cam.frame ? String(cam.frame.objects.length) : "-";
  v.answered.textContent = String(cam.answered);
  v.savings.textContent = (100 * cam.gate_savings).toFixed(0) + " %";
  v.reused.textContent = String(cam.reused);
  v.dropped.textContent = String(cam.dropped);
  v.errors.textContent = String(cam.errors);
  v.sent.textContent = String(cam.sent);
  v.reconnects.textContent = String(cam.reconnects);
  const problem = cam.frame && cam.frame.error ? "frame error: " + cam.frame.error : cam.last_error;
  s.error.textContent = problem || "";
  if (cam.recording) {
    s.note.textContent = "recording " + cam.recording.file + " (" + cam.recording.seconds_left + " s left)";
  }
  if (cam.frame && cam.image && cam.frame.number !== s.requested && !s.loading) {
    s.requested = cam.frame.number;
    loadFrame(s, cam.frame, BASE + cam.image);
  }
}

const voices = new Map();
function showVoice(v) {
  let row = voices.get(v.stream);
  if (!row) {
    const el = document.createElement("div");
    el.className = "voice";
    el.dataset.stream = v.stream;
    const name = document.createElement("b");
    name.textContent = v.stream;
    const talk = document.createElement("span");
    const canvas = document.createElement("canvas");
    canvas.width = 282; canvas.height = 28;
    const time = document.createElement("span");
    time.className = "dim";
    el.append(name, talk, canvas, time);
    document.getElementById("voices").append(el);
    row = { el, talk, canvas, time };
    voices.set(v.stream, row);
  }
  row.talk.className = "talk" + (v.speaking ? " on" : "");
  row.talk.textContent = v.speaking ? "speaking" : "silent";
  row.time.textContent = v.time_s.toFixed(1) + " s";
  const g = row.canvas.getContext("2d");
  g.clearRect(0, 0, row.canvas.width, row.canvas.height);
  v.recent.forEach((p, i) => {
    g.fillStyle = p >= 0.5 ? "#3ddc84" : "#555";
    const h = Math.max(1, p * row.canvas.height);
    g.fillRect(i * 3, row.canvas.height - h, 2, h);
  });
}

function renderAudio(list) {
  const seen = new Set();
  for (const v of list || []) { seen.add(v.stream); showVoice(v); }
  for (const [stream, row] of voices) { if (!seen.has(stream)) { row.el.remove(); voices.delete(stream); } }
  document.getElementById("audio").hidden = voices.size === 0;
}

function render(data) {
  document.getElementById("owner").textContent = data.owner ? "ingest " + data.owner : "";
  renderAudio(data.audio);
  const seen = new Set();
  for (const cam of data.cameras) { seen.add(cam.camera); show(cam); }
  for (const [camera, s] of cards) {
    if (!seen.has(camera)) { s.card.remove(); cards.delete(camera); delete window.natritonShown[camera]; }
  }
  document.getElementById("empty").hidden = data.cameras.length > 0 || voices.size > 0;
}

let pollMs = 500;
async function poll() {
  const conn = document.getElementById("conn");
  try {
    const r = await fetch(withToken(BASE + "/streams.json"), { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const data = await r.json();
    pollMs = data.poll_ms || pollMs;
    render(data);
    conn.textContent = "updated " + new Date(data.updated_ms).toLocaleTimeString();
    conn.classList.remove("down");
  } catch (e) {
    conn.textContent = "cannot reach this ingest copy (" + e.message + ")";
    conn.classList.add("down");
  } finally {
    setTimeout(poll, pollMs);
  }
}
poll();
</script>
</body>
</html>
"""
