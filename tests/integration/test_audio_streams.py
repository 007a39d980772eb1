"""Live audio streams through a real stack with two ingest and two router copies (silero VAD, a stateful model).

A producer publishes a stream's pieces (PCM, 48 kHz) on ``natriton.v1.audio.chunks.<stream>``; the stream's owner
(one ingest copy) carries the model's state from piece to piece and publishes speech events on
``natriton.v1.audio.events.<stream>``. Fifty streams interleaved piece by piece, with a router copy killed and
restarted meanwhile, must each give exactly the events they give alone.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import numpy as np
import pytest
import pytest_asyncio
import soundfile
from nats.aio.client import Client as NATS
from playwright.async_api import async_playwright

from natriton.messages import (
    AudioChunk,
    AudioChunkAck,
    AudioEvent,
    AudioInput,
    AudioStreamEnded,
    AudioStreamState,
    Codec,
    ErrorReply,
    SpeechEnded,
    SpeechStarted,
    VoiceActivity,
)
from natriton.tensors import to_tensor
from natriton_client.protocol import audio_chunks_subject, audio_events_subject, audio_state_subject
from natriton_dev.media import NOISE, VOICES, MediaUnavailableError, fetch_sounds
from natriton_dev.mesh import ServiceProcess
from natriton_dev.stack import LocalStack
from tests.integration.conftest import model_repository_of

pytestmark = pytest.mark.asyncio(loop_scope="session")
MODEL = "silero_vad"
COPIES = {"ingest": 2, "router": 2}
PIECE_S = 0.1
IDLE_S = 3.0
RATE = 48_000
CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if Path(p).exists()), "")
CHUNKS: Codec[AudioChunk] = Codec(AudioChunk)
EVENTS: Codec[AudioEvent] = Codec(AudioEvent)  # type: ignore[arg-type]
ANSWERS: Codec[AudioChunkAck | ErrorReply] = Codec(AudioChunkAck | ErrorReply)  # type: ignore[arg-type]
STATES: Codec[AudioStreamState | ErrorReply] = Codec(AudioStreamState | ErrorReply)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def audio_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    workdir: Path = tmp_path_factory.mktemp("audio-stack")
    env = {"NATRITON_AUDIO_IDLE_S": str(IDLE_S)}
    with LocalStack(
        workdir, model_repository=model_repository_of(workdir, MODEL), copies=COPIES, service_env=env
    ) as running:
        time.sleep(2.5)  # the ingest copies have settled: each stream has one owner, the same for both
        yield running


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def nc(audio_stack: LocalStack) -> AsyncIterator[NATS]:
    connection = await nats.connect(audio_stack.nats_url)
    yield connection
    await connection.drain()


@pytest.fixture(scope="module")
def pieces() -> dict[str, list[np.ndarray]]:
    """Each alsa recording (48 kHz, int16) cut into 0.1 s pieces."""
    try:
        paths = fetch_sounds()
    except MediaUnavailableError as exc:
        pytest.fail(f"the alsa sounds are needed (make media): {exc}")
    cut: dict[str, list[np.ndarray]] = {}
    for path in paths:
        samples, rate = soundfile.read(io.BytesIO(path.read_bytes()), dtype="int16")
        assert rate == 48_000
        step = int(PIECE_S * rate)
        cut[path.name] = [np.ascontiguousarray(samples[i : i + step]) for i in range(0, len(samples), step)]
    return cut


def piece(samples: np.ndarray, seq: int, *, end: bool) -> bytes:
    audio = AudioInput(pcm=to_tensor("PCM", samples), sample_rate=48_000)
    return CHUNKS.encode(AudioChunk(seq=seq, audio=audio, end=end))


class Listener:
    """Every event of some streams, in arrival order, until each stream has ended."""

    def __init__(self) -> None:
        self.events: dict[str, list[AudioEvent]] = {}
        self.ended: dict[str, asyncio.Event] = {}

    async def listen(self, nc: NATS, streams: list[str]) -> None:
        for stream in streams:
            self.events[stream], self.ended[stream] = [], asyncio.Event()

        async def on_event(msg: nats.aio.msg.Msg) -> None:
            stream = msg.subject.rsplit(".", 1)[-1]
            event = EVENTS.decode(msg.data)
            self.events[stream].append(event)
            if isinstance(event, AudioStreamEnded):
                self.ended[stream].set()

        await nc.subscribe(audio_events_subject("*"), cb=on_event)
        await nc.flush()

    async def wait(self, within_s: float) -> None:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self.ended.values())), within_s)


def speech_events(events: list[AudioEvent]) -> list[tuple[str, float, float]]:
    return [(type(e).__name__, e.time_s, e.confidence) for e in events if isinstance(e, SpeechStarted | SpeechEnded)]


def same_speech(got: list[AudioEvent], reference: list[AudioEvent]) -> bool:
    """The same speech events at the same times; confidences to float noise (batches of other sizes)."""
    ours, theirs = speech_events(got), speech_events(reference)
    return len(ours) == len(theirs) and all(
        a[:2] == b[:2] and abs(a[2] - b[2]) <= 2e-4 for a, b in zip(ours, theirs, strict=True)
    )


def probabilities(events: list[AudioEvent]) -> list[float]:
    return [p for e in events if isinstance(e, VoiceActivity) for p in e.probabilities]


async def stream_alone(nc: NATS, stream: str, parts: list[np.ndarray]) -> list[AudioEvent]:
    listener = Listener()
    await listener.listen(nc, [stream])
    for seq, samples in enumerate(parts):
        await nc.publish(audio_chunks_subject(stream), piece(samples, seq, end=seq == len(parts) - 1))
    await listener.wait(30)
    return listener.events[stream]


async def test_a_streamed_recording_gives_its_speech_and_noise_none(
    nc: NATS, pieces: dict[str, list[np.ndarray]]
) -> None:
    voice = await stream_alone(nc, "alone-voice", pieces["Front_Center.wav"])
    kinds = [type(e).__name__ for e in voice if not isinstance(e, VoiceActivity)]
    assert kinds[0] == "SpeechStarted" and kinds[-2:] == ["SpeechEnded", "AudioStreamEnded"], kinds
    assert kinds.count("SpeechStarted") == kinds.count("SpeechEnded") >= 1
    assert max(probabilities(voice)) > 0.9
    duration_s = sum(len(p) for p in pieces["Front_Center.wav"]) / 48_000
    assert all(0 <= t <= duration_s + 0.1 for _, t, _ in speech_events(voice))
    ended = voice[-1]
    assert isinstance(ended, AudioStreamEnded) and ended.reason == "end"
    noise = await stream_alone(nc, "alone-noise", pieces[NOISE])
    assert speech_events(noise) == [] and max(probabilities(noise)) < 0.5


async def test_fifty_streams_interleaved_give_what_each_gives_alone_while_a_router_restarts(
    audio_stack: LocalStack, nc: NATS, pieces: dict[str, list[np.ndarray]]
) -> None:
    names = [*VOICES, NOISE]
    alone = {name: await stream_alone(nc, f"ref-{i}", pieces[name]) for i, name in enumerate(names)}
    streams = {f"s{i:02d}": names[i % len(names)] for i in range(50)}
    listener = Listener()
    await listener.listen(nc, list(streams))
    longest = max(len(pieces[name]) for name in streams.values())
    router = audio_stack.service("router", 1)
    for seq in range(longest):
        if seq == longest // 2:  # half way: one router copy dies with runs in hand, and comes back
            assert router.pid is not None
            os.kill(router.pid, signal.SIGKILL)
            await asyncio.to_thread(router.stop, 5.0)
            await asyncio.to_thread(router.start)
        for stream, name in streams.items():
            if seq < len(pieces[name]):
                last = seq == len(pieces[name]) - 1
                await nc.publish(audio_chunks_subject(stream), piece(pieces[name][seq], seq, end=last))
        await asyncio.sleep(0.02)
    await listener.wait(90)
    await asyncio.to_thread(router.wait_ready, 60.0)
    for stream, name in streams.items():
        got, reference = listener.events[stream], alone[name]
        assert same_speech(got, reference), (stream, name, speech_events(got), speech_events(reference))
        assert np.allclose(probabilities(got), probabilities(reference), atol=2e-4), (stream, name)
        assert [type(e).__name__ for e in got] == [type(e).__name__ for e in reference], (stream, name)


async def test_pieces_out_of_order_are_put_back_in_order(nc: NATS, pieces: dict[str, list[np.ndarray]]) -> None:
    parts = pieces["Rear_Left.wav"]
    reference = await stream_alone(nc, "ordered", parts)
    listener = Listener()
    await listener.listen(nc, ["shuffled"])
    order = list(range(len(parts)))
    order[2], order[5] = order[5], order[2]
    for seq in order:
        await nc.publish(audio_chunks_subject("shuffled"), piece(parts[seq], seq, end=seq == len(parts) - 1))
    await listener.wait(30)
    assert same_speech(listener.events["shuffled"], reference)


async def test_a_piece_is_acknowledged_or_refused_with_a_typed_error(
    nc: NATS, pieces: dict[str, list[np.ndarray]]
) -> None:
    first = await nc.request(audio_chunks_subject("acks"), piece(pieces[NOISE][0], 0, end=False), timeout=5)
    assert ANSWERS.decode(first.data) == AudioChunkAck(stream="acks", seq=0)
    bad = CHUNKS.encode(AudioChunk(seq=1, audio=AudioInput(data=b"not audio at all")))
    refused = ANSWERS.decode((await nc.request(audio_chunks_subject("acks"), bad, timeout=5)).data)
    assert isinstance(refused, ErrorReply) and refused.code == "invalid_argument", refused
    garbage = ANSWERS.decode((await nc.request(audio_chunks_subject("acks"), b"\x00garbage", timeout=5)).data)
    assert isinstance(garbage, ErrorReply) and garbage.code == "invalid_argument", garbage
    negative = CHUNKS.encode(
        AudioChunk(seq=-1, audio=AudioInput(pcm=to_tensor("PCM", pieces[NOISE][0]), sample_rate=RATE))
    )
    refused = ANSWERS.decode((await nc.request(audio_chunks_subject("acks"), negative, timeout=5)).data)
    assert isinstance(refused, ErrorReply) and "seq" in refused.message, refused
    too_long = ANSWERS.decode((await nc.request(audio_chunks_subject("x" * 65), negative, timeout=5)).data)
    assert isinstance(too_long, ErrorReply) and "stream id" in too_long.message, too_long
    wrong_model = CHUNKS.encode(AudioChunk(seq=0, audio=AudioInput(data=b"x"), model="mobilenet_v2"))
    not_vad = ANSWERS.decode((await nc.request(audio_chunks_subject("other"), wrong_model, timeout=5)).data)
    assert isinstance(not_vad, ErrorReply), not_vad


async def test_a_stream_can_be_asked_where_it_stands_and_ends_when_quiet(
    audio_stack: LocalStack, nc: NATS, pieces: dict[str, list[np.ndarray]]
) -> None:
    listener = Listener()
    await listener.listen(nc, ["quiet"])
    parts = pieces["Side_Right.wav"]
    for seq, samples in enumerate(parts[:6]):  # no end: the stream just stops
        await nc.publish(audio_chunks_subject("quiet"), piece(samples, seq, end=False))
    deadline = time.monotonic() + 10
    while True:
        state = STATES.decode((await nc.request(audio_state_subject("quiet"), b"", timeout=5)).data)
        assert isinstance(state, AudioStreamState), state
        if state.next_seq == 6 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert state.next_seq == 6 and state.owner and state.time_s > 0.4, state
    page = ingest_of(audio_stack, state.owner).metrics_url + "/streams.json"  # the owner's live page lists it
    voices = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(page, timeout=5).read()))["audio"]
    [voice] = [v for v in voices if v["stream"] == "quiet"]
    assert voice["next_seq"] == 6 and len(voice["recent"]) >= 15 and max(voice["recent"]) > 0.5, voice
    await listener.wait(IDLE_S + 5)
    ended = listener.events["quiet"][-1]
    assert isinstance(ended, AudioStreamEnded) and ended.reason == "quiet", ended
    gone = STATES.decode((await nc.request(audio_state_subject("quiet"), b"", timeout=5)).data)
    assert isinstance(gone, ErrorReply) and gone.code == "not_found", gone


def ingest_of(stack: LocalStack, instance: str) -> ServiceProcess:
    """The ingest copy whose instance id is ``instance`` (its log says so)."""
    [process] = [
        p for p in stack.services if p.service == "ingest" and f'"instance": "{instance}"' in p.log_since_start()
    ]
    return process


async def owner(nc: NATS, stream: str) -> str:
    state = STATES.decode((await nc.request(audio_state_subject(stream), b"", timeout=5)).data)
    assert isinstance(state, AudioStreamState), state
    return state.owner


async def test_a_stream_whose_owner_dies_goes_on_at_another_copy_from_a_fresh_state(
    audio_stack: LocalStack, nc: NATS, pieces: dict[str, list[np.ndarray]]
) -> None:
    """kill -9 of the owning ingest copy: once the other copy notices (a heartbeat silence), it owns the stream and
    takes its pieces from there on; the stream still ends normally."""
    listener = Listener()
    await listener.listen(nc, ["orphan"])
    track = np.concatenate([pieces[name][i] for name in VOICES for i in range(len(pieces[name]))])
    step = int(PIECE_S * 48_000)
    parts = [track[i : i + step] for i in range(0, len(track) - step, step)][:60]
    killed: ServiceProcess | None = None
    try:
        for seq, samples in enumerate(parts):
            await nc.publish(audio_chunks_subject("orphan"), piece(samples, seq, end=seq == len(parts) - 1))
            if seq == 10:
                await asyncio.sleep(0.5)
                first_owner = await owner(nc, "orphan")
                killed = ingest_of(audio_stack, first_owner)
                assert killed.pid is not None
                os.kill(killed.pid, signal.SIGKILL)
            await asyncio.sleep(0.1)
        await listener.wait(20)
        events = listener.events["orphan"]
        assert isinstance(events[-1], AudioStreamEnded) and events[-1].reason == "end", events[-1]
        after = [e.seq for e in events if isinstance(e, VoiceActivity) and e.seq > 30]
        assert after and after == sorted(after), "the new owner took the later pieces, in order"
    finally:
        if killed is not None:
            await asyncio.to_thread(killed.stop, 5.0)
            await asyncio.to_thread(killed.start)
            await asyncio.to_thread(killed.wait_ready, 60.0)
            await asyncio.sleep(2.5)  # settled again: later tests see one owner per stream


async def test_the_owners_live_page_shows_who_is_speaking(
    audio_stack: LocalStack, nc: NATS, pieces: dict[str, list[np.ndarray]]
) -> None:
    """The owning ingest copy's /streams page draws the stream's speech probability and says when it is speaking."""
    assert CHROMIUM, "Chromium is missing: make browser (apt-get install chromium)"
    parts = [p for name in ("Front_Center.wav", "Rear_Left.wav", "Side_Left.wav") for p in pieces[name]]
    await nc.publish(audio_chunks_subject("page"), piece(parts[0], 0, end=False))
    await asyncio.sleep(0.3)
    url = ingest_of(audio_stack, await owner(nc, "page")).metrics_url + "/streams"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--disable-gpu", "--disable-dev-shm-usage"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 600})
            await page.goto(url, wait_until="domcontentloaded")

            async def talk() -> None:
                for seq, samples in enumerate(parts[1:], 1):
                    await nc.publish(audio_chunks_subject("page"), piece(samples, seq, end=seq == len(parts) - 1))
                    await asyncio.sleep(PIECE_S)

            talking = asyncio.ensure_future(talk())
            await page.wait_for_selector('.voice[data-stream="page"] .talk.on', timeout=15_000)
            drawn = await page.evaluate(
                """() => {
                    const canvas = document.querySelector('.voice[data-stream="page"] canvas');
                    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
                    let green = 0;
                    for (let i = 0; i < pixels.length; i += 4) if (pixels[i + 1] > 150 && pixels[i] < 100) green++;
                    return green;
                }"""
            )
            assert drawn > 50, "no speech bar drawn"
            await talking
        finally:
            await browser.close()
