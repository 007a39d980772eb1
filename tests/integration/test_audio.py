"""Audio through the real stack: speech segments from silero VAD (a stateful model) for real recordings.

The mesh (ingest → preprocess decodes and cuts 32 ms chunks → the router steps through them with the state carried
→ postprocess finds the segments) must give exactly what the same steps give in one process with the wheel's own
ONNX model; clips sent at once share Triton batches without sharing state; bad audio gets typed errors.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import struct
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnxruntime as ort
import pytest
import soundfile

from natriton.audio import chunk, decode_audio, speech_segments, to_model_rate
from natriton.errors import ErrorCode
from natriton.messages import AudioInput, ErrorReply, InferResponse, Reply, SpeechSegments
from natriton.tensors import to_tensor
from natriton_client.aio import MeshClient
from natriton_dev.media import NOISE, VOICES

pytestmark = pytest.mark.asyncio(loop_scope="session")
MODEL = "silero_vad"
RATE = 16_000
CHUNK = 512
LIMITS = {"max_bytes": 64 << 20, "max_duration_s": 300.0}
_SPEC = importlib.util.find_spec("silero_vad")
assert _SPEC is not None and _SPEC.origin is not None
REFERENCE_MODEL = Path(_SPEC.origin).parent / "data" / "silero_vad.onnx"


@pytest.fixture(scope="module")
def sounds(alsa_sounds: dict[str, bytes]) -> dict[str, bytes]:
    return alsa_sounds


@pytest.fixture(scope="module")
def in_one_process() -> Callable[[bytes], Reference]:
    """The same job without the mesh: decode, resample, chunk, silero's own ONNX file with the state carried,
    silero's segment rules with the model's defaults."""
    session = ort.InferenceSession(str(REFERENCE_MODEL), providers=["CPUExecutionProvider"])

    def run(wav: bytes) -> SpeechSegments:
        samples = to_model_rate(decode_audio(wav, **LIMITS), RATE)
        state = np.zeros((2, 1, 128), dtype=np.float32)
        probabilities = []
        for row in chunk(samples, CHUNK, 64):
            out, state = session.run(None, {"input": row[None, :], "state": state, "sr": np.array(RATE, np.int64)})
            probabilities.append(float(out[0, 0]))
        found = speech_segments(probabilities, sample_rate=RATE, chunk=CHUNK, length=len(samples))
        return Reference(
            segments=tuple(_segment(s.start_s, s.end_s, s.confidence) for s in found),
            duration_s=round(len(samples) / RATE, 4),
        )

    return run


Segment = tuple[float, float, float]
"""start_s, end_s, confidence."""


class Reference(NamedTuple):
    """What the job gives in one process."""

    segments: tuple[Segment, ...]
    duration_s: float


def _segment(start_s: float, end_s: float, confidence: float) -> Segment:
    return (round(start_s, 4), round(end_s, 4), round(confidence, 4))


def _wav(samples: np.ndarray, rate: int = RATE) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def speech(reply: Reply) -> SpeechSegments:
    assert isinstance(reply, InferResponse), reply
    assert isinstance(reply.result, SpeechSegments), reply.result
    return reply.result


def assert_same(mesh: SpeechSegments, reference: Reference) -> None:
    """Same segments: times to the sample (1e-3 s), confidences to float32 noise (batched inference)."""
    assert abs(mesh.duration_s - reference.duration_s) < 1e-3
    assert len(mesh.segments) == len(reference.segments), (mesh, reference)
    for got, (start, end, confidence) in zip(mesh.segments, reference.segments, strict=True):
        assert abs(got.start_s - start) < 1e-3 and abs(got.end_s - end) < 1e-3, (got, start, end)
        assert abs(got.confidence - confidence) < 1e-3, (got, confidence)


def _composed(sounds: dict[str, bytes]) -> tuple[bytes, list[tuple[str, float]]]:
    """Three voices with silence and noise between (noise right up to a voice's start; after a voice, silence:
    noise right after speech is taken for its tail for ~150 ms), at 16 kHz; which voice starts where, in seconds."""
    clips = {name: to_model_rate(decode_audio(data, **LIMITS), RATE) for name, data in sounds.items()}
    silence = np.zeros(int(0.8 * RATE), dtype=np.float32)
    parts: list[np.ndarray] = []
    placed: list[tuple[str, float]] = []
    for name in (None, "Front_Center.wav", None, NOISE, "Rear_Right.wav", None, NOISE, "Side_Left.wav", None):
        if name in VOICES:
            placed.append((name, sum(len(p) for p in parts) / RATE))
        parts.append(silence if name is None else clips[name])
    return _wav(np.concatenate(parts)), placed


def between_silences(wav: bytes, in_one_process: Callable[[bytes], Reference]) -> tuple[Segment, ...]:
    """A recording's segments when it is sent between 0.8 s of silence, in seconds from its own start."""
    lead = np.zeros(int(0.8 * RATE), dtype=np.float32)
    samples = np.concatenate([lead, to_model_rate(decode_audio(wav, **LIMITS), RATE), lead])
    return tuple((s[0] - 0.8, s[1] - 0.8, s[2]) for s in in_one_process(_wav(samples)).segments)


async def test_a_composed_clip_gives_each_voice_within_100_ms_of_where_it_was_put(
    client: MeshClient, sounds: dict[str, bytes], in_one_process: Callable[[bytes], Reference]
) -> None:
    """Each voice's speech starts where it was put plus where its speech starts in its own recording (a take
    begins with a moment of silence), and ends likewise; noise between them is no speech."""
    wav, placed = _composed(sounds)
    result = speech(await client.infer(MODEL, audio=AudioInput(data=wav), use_cache=False))
    assert_same(result, in_one_process(wav))
    for name, offset in placed:
        alone = between_silences(sounds[name], in_one_process)
        mine = [s for s in result.segments if offset <= s.start_s and s.end_s <= offset + alone[-1][1] + 0.3]
        assert mine, (name, offset, result)
        assert abs(mine[0].start_s - (offset + alone[0][0])) < 0.1, (name, offset, mine, alone)
        assert abs(mine[-1].end_s - (offset + alone[-1][1])) < 0.1, (name, offset, mine, alone)
    assert sum(1 for s in result.segments) <= 2 * len(placed), "no speech found in the noise"


async def test_pcm_and_the_file_it_came_from_give_the_same_answer(client: MeshClient, sounds: dict[str, bytes]) -> None:
    name = "Front_Left.wav"
    samples, rate = soundfile.read(io.BytesIO(sounds[name]), dtype="int16")
    pcm = AudioInput(pcm=to_tensor("PCM", np.ascontiguousarray(samples)), sample_rate=rate)
    from_pcm = speech(await client.infer(MODEL, audio=pcm, use_cache=False))
    from_file = speech(await client.infer(MODEL, audio=AudioInput(data=sounds[name]), use_cache=False))
    assert from_pcm == from_file


async def test_clips_sent_together_share_batches_but_never_state(
    client: MeshClient, sounds: dict[str, bytes], in_one_process: Callable[[bytes], Reference]
) -> None:
    """24 clips at once (every recording, three times over, in a shuffled order): their chunks go to Triton in
    shared batches, yet each answer is exactly the one it gets alone."""
    names = [*VOICES, NOISE] * 3
    np.random.default_rng(7).shuffle(names)
    replies = await asyncio.gather(
        *(client.infer(MODEL, audio=AudioInput(data=sounds[n]), use_cache=False, timeout_s=60) for n in names)
    )
    for name, reply in zip(names, replies, strict=True):
        assert_same(speech(reply), in_one_process(sounds[name]))


def _wav_claiming(seconds: float, rate: int = RATE) -> bytes:
    """A real WAV header whose data chunk claims ``seconds`` of 16-bit mono, followed by a moment of samples."""
    data_bytes = int(seconds * rate) * 2
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    return header + b"data" + struct.pack("<I", data_bytes) + bytes(3200)


@pytest.mark.parametrize(
    ("audio", "code", "says"),
    [
        (AudioInput(data=b"definitely not audio" * 10), ErrorCode.INVALID_ARGUMENT, "not decodable audio"),
        (AudioInput(data=_wav_claiming(36_000)), ErrorCode.PAYLOAD_TOO_LARGE, "audio is"),  # 10 hours, by header
        (AudioInput(data=_wav_claiming(2.0)), ErrorCode.INVALID_ARGUMENT, "truncated"),
        (AudioInput(), ErrorCode.INVALID_ARGUMENT, "empty"),
        (
            AudioInput(pcm=to_tensor("PCM", np.zeros(16_000, np.int16)), sample_rate=1_000),
            ErrorCode.INVALID_ARGUMENT,
            "sample rate",
        ),
        (AudioInput(pcm=to_tensor("PCM", np.zeros(16_000, np.int16))), ErrorCode.INVALID_ARGUMENT, "sample_rate"),
        (
            AudioInput(pcm=to_tensor("PCM", np.zeros(16_000, np.float64)), sample_rate=16_000),
            ErrorCode.INVALID_ARGUMENT,
            "int16 or float32",
        ),
    ],
    ids=["not-audio", "ten-hours", "truncated", "empty", "rate-1-khz", "pcm-without-rate", "pcm-float64"],
)
async def test_bad_audio_gets_a_typed_error(client: MeshClient, audio: AudioInput, code: ErrorCode, says: str) -> None:
    reply = await client.infer(MODEL, audio=audio, use_cache=False)
    assert isinstance(reply, ErrorReply), reply
    assert reply.code == code and says in reply.message, reply


async def test_audio_and_speech_models_only_go_together(
    client: MeshClient, sounds: dict[str, bytes], photos: dict[str, bytes]
) -> None:
    to_classifier = await client.infer("mobilenet_v2", audio=AudioInput(data=sounds[NOISE]), use_cache=False)
    assert isinstance(to_classifier, ErrorReply) and to_classifier.code == ErrorCode.INVALID_ARGUMENT
    assert "does not take audio" in to_classifier.message
    to_vad = await client.infer(MODEL, image=photos["coffee.jpg"], use_cache=False)
    assert isinstance(to_vad, ErrorReply) and to_vad.code == ErrorCode.INVALID_ARGUMENT
    assert "takes audio" in to_vad.message


async def test_a_clip_is_answered_from_the_cache_the_second_time(client: MeshClient, sounds: dict[str, bytes]) -> None:
    audio = AudioInput(data=sounds["Rear_Left.wav"])
    first = await client.infer(MODEL, audio=audio)
    again = await client.infer(MODEL, audio=audio)
    assert isinstance(first, InferResponse) and isinstance(again, InferResponse)
    assert again.cached and again.result == first.result
