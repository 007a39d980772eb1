"""Video sources without servers: backoff, timestamps, sampling, states, the hand-off queue, and the reader on tiny
synthetic files (a few dozen 64x48 frames written with PyAV) and folders."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from natriton.video.source import (
    AUDIO_PIECE_S,
    AUDIO_RATE,
    AudioPiece,
    Backoff,
    FpsSampler,
    FrameQueue,
    FrameSample,
    Pacer,
    QueuePolicy,
    SourceKind,
    SourceMonitor,
    SourceReader,
    SourceSpec,
    SourceState,
    SourceStats,
    TimestampGuess,
    source_kind,
)
from natriton_dev.process import free_port


# ---- backoff -------------------------------------------------------------------------------
def test_backoff_doubles_from_a_quarter_second_to_four_and_resets() -> None:
    backoff = Backoff()
    assert [backoff.next_delay() for _ in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert [backoff.next_delay() for _ in range(2)] == [0.25, 0.5]


@pytest.mark.parametrize(("initial", "maximum", "factor"), [(0, 4, 2), (1, 0.5, 2), (0.25, 4, 0.5)])
def test_backoff_rejects_nonsense(initial: float, maximum: float, factor: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial, maximum, factor)


# ---- timestamps ----------------------------------------------------------------------------
def test_timestamp_guess_switches_to_dts_when_pts_go_backwards() -> None:
    # Megamind.avi (XVID packed B-frames): decoded frames carry pts 1 2 3 5 4 6 8 7 … while dts count up
    pts = [1, 2, 3, 5, 4, 6, 8, 7, 9, 11, 10]
    guess = TimestampGuess()
    guessed = [guess.guess(p, d) for p, d in zip(pts, range(1, len(pts) + 1), strict=True)]
    assert guessed[:4] == [1, 2, 3, 5]
    assert guessed[4:] == list(range(5, 12))  # dts from the first fault on: never backwards again
    assert all(b >= a for a, b in itertools.pairwise(guessed))


def test_timestamp_guess_keeps_good_pts_and_falls_back() -> None:
    guess = TimestampGuess()
    assert [guess.guess(p, None) for p in (0, 3000, 6000)] == [0, 3000, 6000]
    assert TimestampGuess().guess(None, None) is None
    assert TimestampGuess().guess(None, 7) == 7


# ---- sampling ------------------------------------------------------------------------------
def kept(sampler: FpsSampler, times: list[float | None], step: float | None) -> list[int]:
    return [i for i, t in enumerate(times) if sampler.keep(t, step)]


def test_sampler_keeps_everything_at_fps_zero() -> None:
    assert kept(FpsSampler(0), [0.0, 0.0, 0.01, None, 5.0], 0.04) == [0, 1, 2, 3, 4]


def test_sampler_thins_30_fps_to_10_by_time() -> None:
    times: list[float | None] = [i / 30 for i in range(30)]
    assert kept(FpsSampler(10), times, 1 / 30) == list(range(0, 30, 3))


def test_sampler_megamind_timeline_gives_duration_times_fps() -> None:
    rate = Fraction(24000, 1001)
    times: list[float | None] = [float(i / rate) for i in range(1, 271)]  # 270 frames, first pts 1
    indices = kept(FpsSampler(8), times, float(1 / rate))
    assert abs(len(indices) - 270 / float(rate) * 8) <= 1
    gaps = {b - a for a, b in itertools.pairwise(indices)}
    assert gaps == {3}  # 0.125 s is three frames of 0.0417 s; never a burst or a skip


def test_sampler_tolerates_timestamp_jitter() -> None:
    rng = np.random.default_rng(1)
    times: list[float | None] = [i / 30 + float(rng.uniform(-0.004, 0.004)) for i in range(60)]
    assert kept(FpsSampler(15), times, 1 / 30) == list(range(0, 60, 2))


def test_sampler_keeps_every_frame_of_a_slower_source() -> None:
    times: list[float | None] = [i / 10 for i in range(20)]
    assert kept(FpsSampler(25), times, 0.1) == list(range(20))


def test_sampler_reanchors_when_time_jumps_back() -> None:
    one_pass: list[float | None] = [i / 10 for i in range(20)]  # a looped 2 s file at 10 fps
    indices = kept(FpsSampler(4), one_pass * 3, 0.1)
    effective = [i / 10 for i in indices]  # the continuous timeline the sampler keeps
    assert abs(len(indices) - 6 * 4) <= 1
    assert {round(b - a, 6) for a, b in itertools.pairwise(effective)} <= {0.2, 0.3}


def test_sampler_first_frame_without_pts_does_not_double_keep() -> None:
    # an RTSP stream: the first frame has no pts, the others are on the server's clock
    times: list[float | None] = [None] + [100 + i / 25 for i in range(1, 50)]
    assert kept(FpsSampler(5), times, 1 / 25) == list(range(0, 50, 5))


def test_sampler_after_a_gap_neither_bursts_nor_stalls() -> None:
    times: list[float | None] = [i / 10 for i in range(10)] + [60 + i / 10 for i in range(10)]
    indices = kept(FpsSampler(2), times, 0.1)
    assert indices == [0, 5, 10, 15]


def test_sampler_without_time_or_rate_keeps_all_and_reset_restarts() -> None:
    sampler = FpsSampler(1)
    assert kept(sampler, [None, None, None], None) == [0, 1, 2]
    sampler = FpsSampler(1)
    assert kept(sampler, [0.0, 0.1, 0.2], 0.1) == [0]
    sampler.reset()
    assert sampler.keep(0.3, 0.1)


# ---- states ---------------------------------------------------------------------------------
def test_monitor_follows_the_allowed_transitions_and_reports_them() -> None:
    seen: list[SourceStats] = []
    monitor = SourceMonitor(seen.append)
    assert monitor.state is SourceState.CONNECTING
    assert monitor.set_state(SourceState.LIVE)
    monitor.count(read=3, emitted=2)
    assert monitor.set_state(SourceState.LOST, "the stream ended")
    assert not monitor.set_state(SourceState.LOST, "ConnectionRefusedError")  # still lost: no new change
    monitor.count(reconnects=1)
    assert monitor.set_state(SourceState.LIVE)
    assert monitor.set_state(SourceState.ENDED)
    assert [s.state for s in seen] == ["live", "lost", "live", "ended"]
    assert seen[1].last_error == "the stream ended"
    final = monitor.stats()
    assert (final.frames_read, final.frames_emitted, final.reconnects) == (3, 2, 1)
    assert final.last_error == "ConnectionRefusedError"


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ([SourceState.LIVE], SourceState.CONNECTING),
        ([SourceState.ENDED], SourceState.LIVE),
        ([SourceState.LOST], SourceState.CONNECTING),
    ],
)
def test_monitor_refuses_impossible_transitions(path: list[SourceState], bad: SourceState) -> None:
    monitor = SourceMonitor()
    for state in path:
        monitor.set_state(state)
    with pytest.raises(ValueError, match="cannot go"):
        monitor.set_state(bad)


def test_monitor_survives_a_failing_callback() -> None:
    def explode(stats: SourceStats) -> None:
        raise RuntimeError("boom")

    monitor = SourceMonitor(explode)
    assert monitor.set_state(SourceState.LIVE)
    assert monitor.state is SourceState.LIVE


# ---- the hand-off queue ----------------------------------------------------------------------
async def test_drop_oldest_keeps_the_newest_and_counts_drops() -> None:
    queue: FrameQueue[int] = FrameQueue(3, QueuePolicy.DROP_OLDEST)
    assert all(queue.put(i) for i in range(10))
    queue.close()
    assert [await queue.get() for _ in range(4)] == [7, 8, 9, None]
    assert queue.dropped == 7


async def test_block_waits_for_room_and_loses_nothing() -> None:
    queue: FrameQueue[int] = FrameQueue(2, QueuePolicy.BLOCK)
    assert queue.put(0) and queue.put(1)
    assert not queue.put(2, timeout=0.05)  # full: not added
    done = threading.Event()

    def producer() -> None:
        for i in range(2, 20):
            assert queue.put(i)
        queue.close()
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    await asyncio.sleep(0.05)
    assert not done.is_set() and len(queue) == 2  # the producer waits for the consumer
    received = []
    while (item := await queue.get()) is not None:
        received.append(item)
        await asyncio.sleep(0)
    thread.join(2)
    assert received == list(range(20)) and queue.dropped == 0


async def test_get_wakes_for_an_item_from_another_thread() -> None:
    queue: FrameQueue[str] = FrameQueue(1)
    threading.Timer(0.05, queue.put, args=("frame",)).start()
    assert await asyncio.wait_for(queue.get(), 2) == "frame"


async def test_close_unblocks_a_waiting_put_and_ends_get() -> None:
    queue: FrameQueue[int] = FrameQueue(1, QueuePolicy.BLOCK)
    queue.put(0)
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(queue.put(1)))
    thread.start()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0.05)
    assert await getter == 0
    thread.join(2)
    assert result == [True]
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert await waiting == 1
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0.02)
    assert not waiting.done()
    queue.close()
    assert await asyncio.wait_for(waiting, 2) is None
    assert not queue.put(2)


# ---- the reader on synthetic files ----------------------------------------------------------
def write_clip(path: Path, frames: int, fps: int) -> None:
    """A clip whose frame i is a flat grey of level 8 * i (readable back through lossy compression)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.bit_rate = 4_000_000  # flat greys come back within ±1
        for i in range(frames):
            pixels = np.full((48, 64, 3), 8 * i, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "grey.mp4"
    write_clip(path, frames=30, fps=10)
    return path


def level(sample: FrameSample) -> int:
    return round(float(sample.pixels.mean()) / 8)


async def until(predicate: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        if predicate():
            return
        assert time.monotonic() < deadline, f"not within {within_s} s"
        await asyncio.sleep(0.01)


async def read_all(reader: SourceReader, limit: int = 10_000) -> list[FrameSample]:
    """Start the reader, collect its frames (up to ``limit``), stop it."""
    samples: list[FrameSample] = []
    reader.start()
    try:
        async with asyncio.timeout(20):
            async for sample in reader.frames():
                samples.append(sample)
                if len(samples) >= limit:
                    break
    finally:
        assert await reader.aclose()
    return samples


def test_source_kinds(tmp_path: Path) -> None:
    assert source_kind("rtsp://cam/1") is SourceKind.NETWORK
    assert source_kind("HTTPS://example.com/live.ts") is SourceKind.NETWORK
    assert source_kind(str(tmp_path)) is SourceKind.IMAGES
    assert source_kind(f"file://{tmp_path}") is SourceKind.IMAGES
    assert source_kind(str(tmp_path / "clip.mp4")) is SourceKind.FILE
    with pytest.raises(ValueError):
        SourceSpec("x.mp4", fps=-1)


async def test_reader_samples_a_file_by_time_and_ends(clip: Path) -> None:
    states: list[SourceState] = []
    spec = SourceSpec(str(clip), fps=5)
    reader = SourceReader(spec, policy=QueuePolicy.BLOCK, on_state=lambda s: states.append(s.state))
    samples = await read_all(reader)
    assert [s.frame_number for s in samples] == list(range(15))
    assert [s.source_index for s in samples] == list(range(0, 30, 2))
    assert [level(s) for s in samples] == list(range(0, 30, 2))  # the right pixels with the right numbers
    assert [s.pts for s in samples] == pytest.approx([i / 5 for i in range(15)])
    assert all((s.width, s.height, s.pixels.shape, s.pixels.dtype) == (64, 48, (48, 64, 3), np.uint8) for s in samples)
    assert states == [SourceState.LIVE, SourceState.ENDED]
    stats = reader.stats()
    assert (stats.state, stats.frames_read, stats.frames_emitted, stats.frames_dropped) == ("ended", 30, 15, 0)


async def test_reader_loops_a_file_with_increasing_frame_numbers(clip: Path) -> None:
    reader = SourceReader(SourceSpec(str(clip), loop=True), policy=QueuePolicy.BLOCK)
    samples = await read_all(reader, limit=75)
    assert [s.frame_number for s in samples] == list(range(75))
    assert [s.source_index for s in samples] == [i % 30 for i in range(75)]
    assert reader.state is SourceState.LIVE and not reader.running


async def test_reader_drops_oldest_for_a_slow_consumer(clip: Path) -> None:
    reader = SourceReader(SourceSpec(str(clip)), policy=QueuePolicy.DROP_OLDEST, queue_size=1)
    reader.start()
    await until(lambda: reader.state is SourceState.ENDED)  # it runs ahead of a consumer that has not started
    samples = [s async for s in reader.frames()]
    assert await reader.aclose()
    assert [s.frame_number for s in samples] == [29]
    assert reader.stats().frames_dropped == 29


async def test_reader_of_a_missing_file_ends_with_the_error(tmp_path: Path) -> None:
    reader = SourceReader(SourceSpec(str(tmp_path / "nope.mp4")))
    assert await read_all(reader) == []
    stats = reader.stats()
    assert stats.state is SourceState.ENDED and "nope.mp4" in stats.last_error


async def test_reader_of_images_goes_by_name_at_pace_and_skips_bad_files(tmp_path: Path) -> None:
    for name, value in [("b.png", 20), ("a.png", 10), ("c.jpg", 30)]:
        Image.fromarray(np.full((8, 12, 3), value, dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    started = time.monotonic()
    reader = SourceReader(SourceSpec(str(tmp_path), fps=20), policy=QueuePolicy.BLOCK)
    samples = await read_all(reader)
    assert time.monotonic() - started >= 3 / 20
    assert [round(float(s.pixels.mean())) for s in samples] == [10, 20, 30]  # a, b, c
    assert [s.frame_number for s in samples] == [0, 1, 2]
    assert [s.source_index for s in samples] == [0, 1, 3]  # the index in the listing (bad.png is 2)
    assert [s.pts for s in samples] == pytest.approx([0.0, 0.05, 0.15])  # that index / fps
    stats = reader.stats()
    assert stats.state is SourceState.ENDED and "bad.png" in stats.last_error and stats.frames_read == 3


async def test_reader_of_an_unreachable_stream_retries_with_backoff_and_stops_at_once() -> None:
    url = f"http://viewer:secret@127.0.0.1:{free_port()}/live.ts"
    reader = SourceReader(SourceSpec(url), backoff=Backoff(0.01, 0.04))
    reader.start()
    await until(lambda: reader.stats().reconnects >= 3)
    stats = reader.stats()
    assert stats.state is SourceState.LOST and "refused" in stats.last_error.lower()
    assert "***@127.0.0.1" in stats.last_error and "secret" not in stats.last_error + reader.name
    started = time.monotonic()
    assert await reader.aclose()
    assert time.monotonic() - started < 0.5
    assert [s async for s in reader.frames()] == []


async def test_stop_from_the_state_callback_ends_the_reader(clip: Path) -> None:
    readers: list[SourceReader] = []
    reader = SourceReader(SourceSpec(str(clip)), policy=QueuePolicy.BLOCK, on_state=lambda _: readers[0].stop())
    readers.append(reader)
    reader.start()
    async with asyncio.timeout(10):
        assert [s async for s in reader.frames()] == []  # stopped at the first frame, before handing it over
    assert await reader.aclose()
    assert reader.stats().frames_emitted == 0


async def test_reader_of_a_folder_without_readable_images_ends_even_when_looping(tmp_path: Path) -> None:
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    reader = SourceReader(SourceSpec(str(tmp_path), loop=True))
    assert await read_all(reader) == []
    stats = reader.stats()
    assert stats.state is SourceState.ENDED and "no readable images" in stats.last_error
    (tmp_path / "empty").mkdir()
    empty = SourceReader(SourceSpec(str(tmp_path / "empty")))
    assert await read_all(empty) == []
    assert "no images" in empty.stats().last_error


def test_pacer_plays_a_file_at_its_own_rate_and_reanchors_when_it_loops() -> None:
    pacer = Pacer()
    assert pacer.delay(1.0, now=100.0) == 0.0  # the first frame anchors the clock
    assert pacer.delay(1.5, now=100.1) == pytest.approx(0.4)  # due half a second after the first
    assert pacer.delay(2.0, now=101.2) == pytest.approx(-0.2)  # late: due at once
    assert pacer.delay(0.0, now=105.0) == 0.0  # timestamps went back (the file looped): a new anchor
    assert pacer.delay(0.04, now=105.0) == pytest.approx(0.04)


# ---- the audio track -----------------------------------------------------------------------
def write_clip_with_sound(path: Path, seconds: float, rate: int = 44_100) -> np.ndarray:
    """A 10 fps grey clip with a stereo 440 Hz tone (left) and silence (right) as its sound; the tone, mono."""
    tone = (0.5 * 32767 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)).astype(np.int16)
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = out.add_stream("pcm_s16le", rate=rate, layout="stereo")
        step = rate // 10
        for i, start in enumerate(range(0, len(tone), step)):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 100, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            out.mux(video.encode(frame))
            left = tone[start : start + step]
            interleaved = np.stack([left, np.zeros_like(left)], axis=1).reshape(1, -1)
            audio = av.AudioFrame.from_ndarray(interleaved, format="s16", layout="stereo")
            audio.sample_rate, audio.pts, audio.time_base = rate, start, Fraction(1, rate)
            out.mux(sound.encode(audio))
        out.mux(video.encode(None))
        out.mux(sound.encode(None))
    return tone


async def read_sound(reader: SourceReader) -> list[AudioPiece]:
    reader.start()
    try:
        pieces = [p async for p in reader.audio_pieces()]
        frames = [f async for f in reader.frames()]
    finally:
        assert await reader.aclose()
    assert frames
    return pieces


async def test_reader_hands_on_the_sound_as_mono_16_khz_pieces_of_a_quarter_second(tmp_path: Path) -> None:
    clip = tmp_path / "tone.mkv"
    write_clip_with_sound(clip, seconds=2.0)
    pieces = await read_sound(SourceReader(SourceSpec(str(clip), audio=True), policy=QueuePolicy.BLOCK, queue_size=64))
    assert all(p.sample_rate == AUDIO_RATE and p.samples.dtype == np.int16 and p.samples.ndim == 1 for p in pieces)
    assert [len(p.samples) for p in pieces[:-1]] == [round(AUDIO_PIECE_S * AUDIO_RATE)] * (len(pieces) - 1)
    assert 0 < len(pieces[-1].samples) <= round(AUDIO_PIECE_S * AUDIO_RATE)  # the rest is flushed, not held back
    assert sum(p.duration_s for p in pieces) == pytest.approx(2.0, abs=0.01)
    assert [p.pts for p in pieces] == pytest.approx([i * AUDIO_PIECE_S for i in range(len(pieces))], abs=1e-3)
    samples = np.concatenate([p.samples for p in pieces]).astype(np.float32)
    middle = samples[AUDIO_RATE // 4 : -AUDIO_RATE // 4]
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.25 * 32767 / np.sqrt(2), rel=0.05)  # left and right mixed
    spectrum = np.abs(np.fft.rfft(middle))
    assert np.argmax(spectrum) * AUDIO_RATE / len(middle) == pytest.approx(440, abs=2)


async def test_reader_without_audio_asked_hands_on_no_sound(tmp_path: Path) -> None:
    clip = tmp_path / "tone.mkv"
    write_clip_with_sound(clip, seconds=0.5)
    assert await read_sound(SourceReader(SourceSpec(str(clip)), policy=QueuePolicy.BLOCK, queue_size=64)) == []


async def test_a_source_without_an_audio_track_is_read_for_its_video_and_says_so(clip: Path) -> None:
    reader = SourceReader(SourceSpec(str(clip), audio=True), policy=QueuePolicy.BLOCK, queue_size=64)
    assert await read_sound(reader) == []
    assert reader.stats().frames_read == 30 and "no audio track" in reader.stats().last_error


async def test_a_looped_file_hands_on_its_sound_each_pass(tmp_path: Path) -> None:
    clip = tmp_path / "tone.mkv"
    write_clip_with_sound(clip, seconds=1.0)
    reader = SourceReader(SourceSpec(str(clip), audio=True, loop=True), policy=QueuePolicy.BLOCK, queue_size=64)
    reader.start()
    try:
        total = 0.0
        async for piece in reader.audio_pieces():
            total += piece.duration_s
            if total >= 2.5:  # (its 10 frames a pass fit the frame queue: the reader never waits for them)
                break
    finally:
        assert await reader.aclose()
    assert total >= 2.5
