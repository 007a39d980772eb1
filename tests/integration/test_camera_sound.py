"""A camera's sound through the live audio path: a video file with an audio track is added as a camera with an
``audio_model``; its owner reads the track (PyAV: mono, 16 kHz) and publishes it as the live audio stream named like
the camera, exactly as a microphone would; the stream's owner runs silero VAD with its state carried and publishes
speech events on ``natriton.v1.audio.events.<camera>``.

The clip is made here: a still picture at 10 fps with, on its 48 kHz audio track, three real voices put at known
offsets between silence and noise. The camera's speech events must match where the voices were put (±100 ms) and
what the same audio gives as one clip through ``natriton.v1.infer``.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from fractions import Fraction
from pathlib import Path

import av
import nats
import numpy as np
import pytest
import soundfile
from nats.aio.client import Client as NATS

from natriton.messages import (
    AudioEvent,
    AudioInput,
    AudioStreamEnded,
    Codec,
    InferResponse,
    SpeechEnded,
    SpeechSegments,
    SpeechStarted,
    StreamMode,
    StreamSource,
    VoiceActivity,
)
from natriton.streams import open_registry
from natriton_client.aio import MeshClient
from natriton_client.protocol import audio_events_subject
from natriton_dev.media import NOISE, MediaUnavailableError, fetch_sounds
from natriton_dev.stack import LocalStack

pytestmark = pytest.mark.asyncio(loop_scope="session")
RATE = 48_000
FPS = 10
EVENTS: Codec[AudioEvent] = Codec(AudioEvent)  # type: ignore[arg-type]
LAYOUT = (None, "Front_Center.wav", None, NOISE, "Rear_Right.wav", None, "Side_Left.wav", None)
"""What the track holds, in order: None is 0.8 s of silence."""


def compose_track() -> tuple[np.ndarray, list[tuple[str, float]]]:
    """The audio track (int16, 48 kHz) and where each voice was put, in seconds."""
    try:
        paths = {path.name: path for path in fetch_sounds()}
    except MediaUnavailableError as exc:
        pytest.fail(f"the alsa sounds are needed (make media): {exc}")
    parts: list[np.ndarray] = []
    placed: list[tuple[str, float]] = []
    for name in LAYOUT:
        if name is None:
            parts.append(np.zeros(int(0.8 * RATE), dtype=np.int16))
            continue
        samples, rate = soundfile.read(io.BytesIO(paths[name].read_bytes()), dtype="int16")
        assert rate == RATE
        if name != NOISE:
            placed.append((name, sum(len(p) for p in parts) / RATE))
        parts.append(samples if samples.ndim == 1 else samples[:, 0])
    return np.concatenate(parts), placed


def write_video(path: Path, track: np.ndarray) -> None:
    """A still grey picture at ``FPS`` with ``track`` as its sound (mpeg4 + PCM in Matroska), interleaved."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=FPS)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        sound = out.add_stream("pcm_s16le", rate=RATE, layout="mono")
        picture = np.full((240, 320, 3), 128, dtype=np.uint8)
        step = RATE // FPS
        for i, start in enumerate(range(0, len(track), step)):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(video.encode(frame))
            piece = track[start : start + step].reshape(1, -1)
            audio = av.AudioFrame.from_ndarray(np.ascontiguousarray(piece), format="s16", layout="mono")
            audio.sample_rate, audio.pts, audio.time_base = RATE, start, Fraction(1, RATE)
            out.mux(sound.encode(audio))
        out.mux(video.encode(None))
        out.mux(sound.encode(None))


async def camera_sound(nc: NATS, source: StreamSource, timeout_s: float) -> list[AudioEvent]:
    """Every event of the camera's live audio stream until it ends."""
    events: list[AudioEvent] = []
    ended = asyncio.Event()

    async def on_event(msg: nats.aio.msg.Msg) -> None:
        event = EVENTS.decode(msg.data)
        events.append(event)
        if isinstance(event, AudioStreamEnded):
            ended.set()

    subscription = await nc.subscribe(audio_events_subject(source.camera), cb=on_event)
    await nc.flush()
    registry = await open_registry(nc)
    await registry.put_source(source)
    try:
        await asyncio.wait_for(ended.wait(), timeout_s)
    finally:
        await registry.remove_source(source.camera)
        await subscription.unsubscribe()
    return events


async def test_a_cameras_sound_gives_speech_events_where_the_voices_were_put(
    stack: LocalStack, client: MeshClient, nc: NATS, tmp_path: Path
) -> None:
    track, placed = compose_track()
    clip = tmp_path / "voices.mkv"
    write_video(clip, track)
    camera = f"voices-{uuid.uuid4().hex[:6]}"
    source = StreamSource(camera=camera, url=str(clip), mode=StreamMode.REALTIME, fps=2, audio_model="silero_vad")
    events = await camera_sound(nc, source, timeout_s=60)

    ended = events[-1]
    assert isinstance(ended, AudioStreamEnded) and ended.reason == "end", events[-3:]
    assert abs(ended.time_s - len(track) / RATE) < 0.1, (ended, len(track) / RATE)
    activity = [e for e in events if isinstance(e, VoiceActivity)]
    assert [a.seq for a in activity] == sorted(a.seq for a in activity)  # the pieces were taken in order
    starts = [e.time_s for e in events if isinstance(e, SpeechStarted)]
    ends = [e.time_s for e in events if isinstance(e, SpeechEnded)]
    assert len(starts) == len(ends)

    # the same sound as one clip through natriton.v1.infer: the live stream finds the same speech
    wav = io.BytesIO()
    soundfile.write(wav, track, RATE, format="WAV", subtype="PCM_16")
    reply = await client.infer("silero_vad", audio=AudioInput(data=wav.getvalue()), use_cache=False)
    assert isinstance(reply, InferResponse) and isinstance(reply.result, SpeechSegments), reply
    segments = reply.result.segments
    assert len(segments) == len(starts), (segments, starts, ends)
    for segment, start, end in zip(segments, starts, ends, strict=True):
        assert abs(segment.start_s - start) < 0.1 and abs(segment.end_s - end) < 0.1, (segment, start, end)
    # and a speech start follows where each voice was put (a take opens with a moment of silence; test_audio.py
    # checks the clip to 100 ms of the placement)
    for name, offset in placed:
        mine = [start for start in starts if offset - 0.1 <= start <= offset + 1.0]
        assert mine, (name, offset, starts)


async def test_a_camera_whose_audio_model_takes_no_audio_says_so_in_its_status(
    stack: LocalStack, nc: NATS, tmp_path: Path
) -> None:
    track, _ = compose_track()
    clip = tmp_path / "voices.mkv"
    write_video(clip, track[: 2 * RATE])
    camera = f"wrong-{uuid.uuid4().hex[:6]}"
    registry = await open_registry(nc)
    await registry.put_source(StreamSource(camera=camera, url=str(clip), fps=2, loop=True, audio_model="mobilenet_v2"))
    try:
        async with asyncio.timeout(30):
            while True:
                status = await registry.get_status(camera)
                if status is not None and "audio refused" in status.last_error:
                    break
                await asyncio.sleep(0.5)
    finally:
        await registry.remove_source(camera)
    assert "invalid_argument" in status.last_error and "mobilenet_v2" in status.last_error, status
