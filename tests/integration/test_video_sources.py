"""Video sources on real media: Debian's sample clips (fetched once by ``natriton_dev.media.sample_clip``), real
photos in a folder, and a live HTTP MPEG-TS stream from a server process that the tests kill and bring back on the
same port while one reader keeps running."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from natriton.video.source import FrameSample, QueuePolicy, SourceReader, SourceSpec, SourceState, SourceStats
from natriton_dev.media import StreamServer, sample_clip

pytestmark = pytest.mark.asyncio(loop_scope="session")

MEGAMIND_SECONDS = 270 / (24000 / 1001)  # 11.26 s


@pytest.fixture(scope="module")
def megamind() -> Path:
    if shutil.which("apt-get") is None:
        pytest.skip("the sample clips come from Debian's opencv-doc package: needs apt-get (Debian/Ubuntu)")
    return sample_clip("Megamind.avi")  # fetched on first use (apt-get download + dpkg-deb -x)


@pytest.fixture
def stream_server(megamind: Path, tmp_path: Path) -> Iterator[StreamServer]:
    with StreamServer(megamind, tmp_path) as server:
        yield server


async def wait_for(predicate: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while True:
        if predicate():
            return
        assert time.monotonic() < deadline, f"{what}: not within {within_s} s"
        await asyncio.sleep(0.02)


class Collector:
    """A reader whose frames a task consumes, recording its state changes."""

    def __init__(self, spec: SourceSpec) -> None:
        self.reader = SourceReader(spec, on_state=self.states_append)
        self.samples: list[FrameSample] = []
        self.states: list[SourceStats] = []
        self.task: asyncio.Task[None] | None = None

    def states_append(self, stats: SourceStats) -> None:
        self.states.append(stats)  # called from the reader thread (list.append is atomic)

    async def _consume(self) -> None:
        async for sample in self.reader.frames():
            self.samples.append(sample)

    def start(self) -> None:
        self.reader.start()
        self.task = asyncio.ensure_future(self._consume())

    async def close(self) -> None:
        assert await self.reader.aclose(), "the reader thread did not exit"
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)


async def test_megamind_at_8_fps(megamind: Path) -> None:
    states: list[SourceStats] = []
    reader = SourceReader(SourceSpec(str(megamind), fps=8), policy=QueuePolicy.BLOCK, on_state=states.append)
    reader.start()
    async with asyncio.timeout(30):
        samples = [s async for s in reader.frames()]
    assert await reader.aclose()
    assert abs(len(samples) - MEGAMIND_SECONDS * 8) <= 1, len(samples)
    assert [s.frame_number for s in samples] == list(range(len(samples)))
    pts = [s.pts for s in samples]
    assert all(p is not None for p in pts)
    gaps = np.diff(np.array(pts, dtype=float))
    assert (gaps > 0).all(), "pts must increase"
    assert 0.124 < float(gaps.mean()) < 0.127 and gaps.max() < 0.17  # one frame every 1/8 s of video
    assert all(s.pixels.shape == (528, 720, 3) and (s.width, s.height) == (720, 528) for s in samples)
    assert all(b.source_index > a.source_index for a, b in itertools.pairwise(samples))
    assert samples[-1].pixels.std() > 10  # a real picture, not a blank frame
    stats = reader.stats()
    assert [s.state for s in states] == [SourceState.LIVE, SourceState.ENDED]
    assert (stats.frames_read, stats.frames_emitted, stats.frames_dropped) == (270, len(samples), 0)


async def test_a_folder_of_real_photos_in_name_order_at_pace(tmp_path: Path) -> None:
    from skimage import data

    photos = {
        "03-astronaut.png": data.astronaut(),  # type: ignore[no-untyped-call]
        "01-coffee.png": data.coffee(),  # type: ignore[no-untyped-call]
        "02-chelsea.png": data.chelsea(),  # type: ignore[no-untyped-call]
    }
    for name, pixels in photos.items():
        Image.fromarray(pixels).save(tmp_path / name)
    reader = SourceReader(SourceSpec(str(tmp_path), fps=10), policy=QueuePolicy.BLOCK)
    started = time.monotonic()
    reader.start()
    async with asyncio.timeout(30):
        samples = [s async for s in reader.frames()]
    elapsed = time.monotonic() - started
    assert await reader.aclose()
    assert len(samples) == 3
    for sample, name in zip(samples, sorted(photos), strict=True):
        assert np.array_equal(sample.pixels, photos[name]), name
        assert (sample.height, sample.width) == photos[name].shape[:2]
    assert elapsed >= 0.2  # three photos at 10 per second: 0, 0.1, 0.2 s
    assert reader.stats().state is SourceState.ENDED


async def test_the_stream_server_serves_several_clients_at_once(stream_server: StreamServer) -> None:
    collectors = [Collector(SourceSpec(stream_server.url)) for _ in range(3)]
    for collector in collectors:
        collector.start()
    try:
        await wait_for(lambda: all(len(c.samples) >= 24 for c in collectors), 15, "a second of frames for every client")
    finally:
        for collector in collectors:
            await collector.close()
    for collector in collectors:
        first, last = collector.samples[0], collector.samples[-1]
        assert last.captured_at - first.captured_at > 0.5  # paced like a camera, not as fast as it decodes
        assert [s.state for s in collector.states] == [SourceState.LIVE]


async def test_live_stream_survives_its_server_being_killed_and_restarted(stream_server: StreamServer) -> None:
    collector = Collector(SourceSpec(stream_server.url, fps=10))
    collector.start()
    try:
        await wait_for(lambda: len(collector.samples) >= 5, 15, "live frames")
        assert collector.reader.state is SourceState.LIVE
        port = stream_server.port
        await asyncio.to_thread(stream_server.stop)  # killed: the stream just ends or errors
        await wait_for(lambda: collector.reader.state is SourceState.LOST, 5, "state lost")
        before = len(collector.samples)
        await asyncio.sleep(1.0)  # down for a while: reconnect attempts are refused
        assert collector.reader.state is SourceState.LOST
        await asyncio.to_thread(stream_server.start)
        assert stream_server.port == port
        restarted_at = time.time()
        await wait_for(lambda: len(collector.samples) >= before + 5, 10, "frames after the restart")
        resumed = collector.samples[before]
        assert resumed.captured_at > restarted_at
        assert resumed.captured_at - restarted_at < 5.0, "frames resumed too late"
        assert collector.reader.running
    finally:
        await collector.close()
    numbers = [s.frame_number for s in collector.samples]
    assert all(b > a for a, b in itertools.pairwise(numbers)), "frame numbers must keep increasing"
    assert [s.state for s in collector.states] == [SourceState.LIVE, SourceState.LOST, SourceState.LIVE]
    stats = collector.reader.stats()
    assert stats.reconnects >= 2 and "refused" in stats.last_error.lower()
    assert all(s.pixels.shape == (528, 720, 3) for s in collector.samples)


async def test_stop_interrupts_a_read_blocked_on_a_silent_server(stream_server: StreamServer) -> None:
    read_timeout_s = 1.0
    collector = Collector(SourceSpec(stream_server.url, read_timeout_s=read_timeout_s))
    collector.start()
    pid = stream_server.pid
    assert pid is not None
    try:
        await wait_for(lambda: len(collector.samples) >= 5, 15, "live frames")
        os.kill(pid, signal.SIGSTOP)  # the connection stays open, no more bytes arrive
        read = collector.reader.stats().frames_read
        await asyncio.sleep(0.3)
        assert collector.reader.stats().frames_read - read <= 2  # nothing more comes: the read is blocked
        assert collector.reader.state is SourceState.LIVE  # and has not timed out yet
        started = time.monotonic()
        await collector.close()
        elapsed = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert elapsed < read_timeout_s + 0.5, f"stop took {elapsed:.2f} s"
    assert not collector.reader.running
