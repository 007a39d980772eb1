"""natriton.audio on real speech: Debian's alsa-utils recordings (``natriton_dev.media.fetch_sounds``), silero VAD's
own ONNX model (onnxruntime) and, to compare with, silero's own code (the ``silero_vad`` wheel; it imports torch)."""

from __future__ import annotations

import importlib.util
import io
import itertools
import math
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf

from natriton.audio import (
    Audio,
    Segment,
    SpeechEvent,
    SpeechTracker,
    StreamFramer,
    chunk,
    decode_audio,
    pcm_audio,
    speech_segments,
    to_model_rate,
)
from natriton.errors import ErrorCode, MeshError
from natriton_dev.media import NOISE, VOICES, MediaUnavailableError, fetch_sounds

RATE = 16_000
CHUNK = 512
LIMITS: dict[str, Any] = {"max_bytes": 10_000_000, "max_duration_s": 60.0}
_SPEC = importlib.util.find_spec("silero_vad")
assert _SPEC is not None and _SPEC.origin is not None, "the silero-vad wheel is not installed (make venv)"
MODEL = Path(_SPEC.origin).parent / "data" / "silero_vad.onnx"


# --------------------------------------------------------------------------------------------
# Fixtures: the real recordings and the real model
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sounds() -> dict[str, Path]:
    """The alsa-utils recordings; the test fails (never skips) with the fetch's message when they cannot be had."""
    try:
        paths = fetch_sounds()
    except MediaUnavailableError as exc:
        pytest.fail(f"the alsa sounds are needed (make media): {exc}")
    return {path.name: path for path in paths}


@pytest.fixture(scope="module")
def clips(sounds: dict[str, Path]) -> dict[str, np.ndarray]:
    """Every recording decoded and at 16 kHz."""
    return {name: to_model_rate(decode_audio(path.read_bytes(), **LIMITS), RATE) for name, path in sounds.items()}


@pytest.fixture(scope="module")
def vad() -> Callable[[np.ndarray], list[float]]:
    """Per-chunk speech probabilities from silero's ONNX model, fed :func:`chunk`'s rows with the state carried."""
    options = ort.SessionOptions()
    options.inter_op_num_threads = options.intra_op_num_threads = 1  # as silero's OnnxWrapper
    session = ort.InferenceSession(str(MODEL), sess_options=options, providers=["CPUExecutionProvider"])

    def run(samples: np.ndarray) -> list[float]:
        state = np.zeros((2, 1, 128), dtype=np.float32)
        probabilities = []
        for row in chunk(samples, CHUNK, 64):
            out, state = session.run(
                ["output", "stateN"], {"input": row[None, :], "state": state, "sr": np.array(RATE, dtype=np.int64)}
            )
            probabilities.append(float(out[0, 0]))
        return probabilities

    return run


def _encode(samples: np.ndarray, rate: int, format: str, subtype: str | None = None) -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, rate, format=format, subtype=subtype)
    return out.getvalue()


def _refused(data: bytes, code: ErrorCode = ErrorCode.INVALID_ARGUMENT, **limits: Any) -> str:
    with pytest.raises(MeshError) as caught:
        decode_audio(data, **{**LIMITS, **limits})
    assert caught.value.code is code, caught.value
    return caught.value.message


def _samples(segments: list[Segment], rate: int = RATE) -> list[tuple[int, int]]:
    return [(round(segment.start_s * rate), round(segment.end_s * rate)) for segment in segments]


# --------------------------------------------------------------------------------------------
# Decoding and limits
# --------------------------------------------------------------------------------------------
def test_wav_flac_and_ogg_of_one_recording_decode_alike(sounds: dict[str, Path]) -> None:
    wav = sounds["Front_Center.wav"].read_bytes()
    pcm, rate = sf.read(io.BytesIO(wav), dtype="int16")
    decoded = decode_audio(wav, **LIMITS)
    assert (decoded.sample_rate, decoded.channels, decoded.samples.dtype) == (48_000, 1, np.float32)
    assert 1.3 < decoded.duration_s < 1.5
    np.testing.assert_array_equal(decoded.samples, pcm.astype(np.float32) / 32768)
    flac = decode_audio(_encode(pcm, rate, "FLAC", "PCM_16"), **LIMITS)
    np.testing.assert_array_equal(flac.samples, decoded.samples)  # lossless: the same samples
    for subtype in ("VORBIS", "OPUS"):  # lossy: the same length and rate, the same waveform within coding noise
        ogg = decode_audio(_encode(pcm, rate, "OGG", subtype), **LIMITS)
        assert (len(ogg.samples), ogg.sample_rate) == (len(decoded.samples), rate)
        noise = np.sqrt(np.mean((ogg.samples - decoded.samples) ** 2))
        assert 20 * np.log10(np.sqrt(np.mean(decoded.samples**2)) / noise) > 10, subtype


def test_channels_are_averaged(sounds: dict[str, Path]) -> None:
    pcm, rate = sf.read(sounds["Front_Left.wav"], dtype="float32")
    stereo = np.stack([pcm, np.zeros_like(pcm)], axis=1)
    decoded = decode_audio(_encode(stereo, rate, "WAV", "FLOAT"), **LIMITS)
    assert decoded.channels == 2
    np.testing.assert_allclose(decoded.samples, pcm / 2, atol=1e-7)
    assert pcm_audio(stereo, rate, max_duration_s=60).channels == 2
    np.testing.assert_array_equal(pcm_audio(stereo, rate, max_duration_s=60).samples, decoded.samples)


@pytest.mark.parametrize(
    "data",
    [b"hello world " * 40, b"\x89PNG\r\n\x1a\n" + bytes(200), b"RIFF\x00\x00\x00\x00WAVEjunk", bytes(1000)],
    ids=["text", "png", "riff-without-chunks", "zeros"],
)
def test_not_audio_is_refused(data: bytes) -> None:
    assert "not decodable audio (WAV, FLAC or OGG expected)" in _refused(data)


def test_empty_is_refused() -> None:
    assert "audio is empty" in _refused(b"")


def test_a_header_without_samples_is_refused() -> None:
    assert "no samples" in _refused(_encode(np.zeros(0, dtype=np.int16), 16_000, "WAV", "PCM_16"))


def test_truncated_audio_is_refused(sounds: dict[str, Path]) -> None:
    wav = sounds["Rear_Left.wav"].read_bytes()
    assert "truncated: the header says 63,010 frames, 31,494 decoded" in _refused(wav[: len(wav) // 2])
    assert "not decodable" in _refused(wav[:30])  # cut inside the header
    pcm, rate = sf.read(io.BytesIO(wav), dtype="int16")
    flac = _encode(pcm, rate, "FLAC", "PCM_16")
    assert "truncated" in _refused(flac[: len(flac) // 2])


def _never_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("samples were decoded")

    monkeypatch.setattr(sf.SoundFile, "read", refuse)


def test_too_long_by_header_is_refused_before_decoding(
    sounds: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    wav = bytearray(sounds["Front_Center.wav"].read_bytes())
    assert wav[36:40] == b"data"
    ten_hours = 10 * 3600 * 48_000 * 2
    struct.pack_into("<I", wav, 40, ten_hours)  # the data chunk claims 10 hours; 1.4 s of it follow
    struct.pack_into("<I", wav, 4, ten_hours + 36)
    _never_decoded(monkeypatch)
    assert "audio is 36,000.0 s long; the limit is 60.0 s" in _refused(bytes(wav), ErrorCode.PAYLOAD_TOO_LARGE)
    flac = _encode(np.zeros(48_000 * 3, dtype=np.int16), 48_000, "FLAC", "PCM_16")  # 3 s by its STREAMINFO
    assert "3.0 s long" in _refused(flac, ErrorCode.PAYLOAD_TOO_LARGE, max_duration_s=2.0)


def test_too_many_bytes_is_refused(sounds: dict[str, Path]) -> None:
    wav = sounds["Noise.wav"].read_bytes()
    assert "the limit is 1,000" in _refused(wav, ErrorCode.PAYLOAD_TOO_LARGE, max_bytes=1_000)


@pytest.mark.parametrize("rate", [0, 4_000, 7_999, 192_001, 384_000])
def test_a_rate_outside_8_to_192_khz_is_refused(rate: int) -> None:
    wav = bytearray(_encode(np.zeros(16_000, dtype=np.int16), 16_000, "WAV", "PCM_16"))
    struct.pack_into("<II", wav, 24, rate, rate * 2)  # the fmt chunk's sample rate and byte rate
    message = _refused(bytes(wav))
    assert f"sample rate is {rate:,} Hz; 8,000 to 192,000 Hz expected" in message or "not decodable" in message
    with pytest.raises(MeshError, match="8,000 to 192,000 Hz expected") as caught:
        pcm_audio(np.zeros(100, dtype=np.int16), rate, max_duration_s=60)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT


def test_too_many_channels_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    nine = _encode(np.zeros((1_000, 9), dtype=np.int16), 16_000, "WAV", "PCM_16")
    _never_decoded(monkeypatch)
    assert "audio has 9 channels; 1 to 8 expected" in _refused(nine)
    assert "1 to 2 expected" in _refused(_encode(np.zeros((1_000, 3), dtype=np.int16), 8_000, "WAV"), max_channels=2)
    with pytest.raises(MeshError, match="9 channels"):
        pcm_audio(np.zeros((100, 9), dtype=np.float32), 16_000, max_duration_s=60)


def test_other_containers_are_refused() -> None:
    aiff = _encode(np.zeros(1_000, dtype=np.int16), 16_000, "AIFF", "PCM_16")
    assert "audio format AIFF is not accepted (WAV, FLAC or OGG expected)" in _refused(aiff)


def test_pcm_tensors() -> None:
    ramp = np.array([0, 16_384, -32_768, 32_767], dtype=np.int16)
    audio = pcm_audio(ramp, 8_000, max_duration_s=1)
    np.testing.assert_array_equal(audio.samples, [0, 0.5, -1, 32_767 / 32_768])
    assert (audio.sample_rate, audio.channels, audio.samples.dtype) == (8_000, 1, np.float32)
    column = pcm_audio(ramp.reshape(-1, 1).astype(np.float32) / 32_768, 8_000, max_duration_s=1)
    np.testing.assert_array_equal(column.samples, audio.samples)
    cases: list[tuple[np.ndarray, ErrorCode, str]] = [
        (np.zeros(0, dtype=np.int16), ErrorCode.INVALID_ARGUMENT, "no samples"),
        (np.zeros((0, 2), dtype=np.float32), ErrorCode.INVALID_ARGUMENT, "no samples"),
        (np.zeros(10, dtype=np.float64), ErrorCode.INVALID_ARGUMENT, "float64; int16 or float32 expected"),
        (np.zeros((2, 2, 2), dtype=np.int16), ErrorCode.INVALID_ARGUMENT, "[frames] or [frames, channels]"),
        (np.array([0.0, np.nan], dtype=np.float32), ErrorCode.INVALID_ARGUMENT, "finite"),
        (np.zeros(8_001, dtype=np.int16), ErrorCode.PAYLOAD_TOO_LARGE, "1.0 s long; the limit is 1.0 s"),
    ]
    for samples, code, message in cases:
        with pytest.raises(MeshError) as caught:
            pcm_audio(samples, 8_000, max_duration_s=1)
        assert caught.value.code is code and message in caught.value.message, (samples.shape, caught.value)


# --------------------------------------------------------------------------------------------
# Resampling and framing
# --------------------------------------------------------------------------------------------
def test_resampling_keeps_a_sines_frequency() -> None:
    seconds, frequency = 2, 1_000.0
    time = np.arange(48_000 * seconds) / 48_000
    audio = Audio((0.8 * np.sin(2 * np.pi * frequency * time)).astype(np.float32), 48_000)
    resampled = to_model_rate(audio, RATE)
    assert resampled.dtype == np.float32 and len(resampled) == RATE * seconds
    spectrum = np.abs(np.fft.rfft(resampled * np.hanning(len(resampled))))
    assert np.fft.rfftfreq(len(resampled), 1 / RATE)[np.argmax(spectrum)] == frequency
    middle = resampled[RATE // 2 : -RATE // 2]
    assert abs(np.sqrt(np.mean(middle**2)) - 0.8 / np.sqrt(2)) < 0.005
    loud = Audio(np.array([2.0, -3.0, 0.5], dtype=np.float32), RATE)
    np.testing.assert_array_equal(to_model_rate(loud, RATE), [1.0, -1.0, 0.5])  # same rate: clipped only


class _Recorder:
    """Stands in for OnnxWrapper's onnxruntime session: records what silero feeds the model."""

    def __init__(self) -> None:
        self.inputs: list[np.ndarray] = []

    def run(self, outputs: object, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        self.inputs.append(feeds["input"].copy())
        return np.zeros((1, 1), dtype=np.float32), feeds["state"]


@pytest.mark.parametrize(("rate", "size", "context"), [(16_000, 512, 64), (8_000, 256, 32)])
@pytest.mark.parametrize("length", [1, 255, 256, 512, 1_000, 5_000])
def test_chunk_is_silero_framing(
    rate: int, size: int, context: int, length: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from silero_vad import utils_vad
    from silero_vad.utils_vad import OnnxWrapper

    samples = np.random.default_rng(length).uniform(-1, 1, length).astype(np.float32)
    monkeypatch.setattr(utils_vad, "np", np, raising=False)  # OnnxWrapper.__init__ imports it as a global
    wrapper = OnnxWrapper.__new__(OnnxWrapper)  # silero's own __call__ and audio_forward, a recorder for a model
    wrapper.session, wrapper.sample_rates = _Recorder(), [8_000, 16_000]
    wrapper.reset_states()
    if length * 31.25 >= rate:  # audio_forward refuses a clip shorter than one chunk
        wrapper.audio_forward(torch.from_numpy(samples), rate)
        expected = np.concatenate(wrapper.session.inputs)
        np.testing.assert_array_equal(chunk(samples, size, context), expected)
    framed = chunk(samples, size, context)
    assert framed.shape == (math.ceil(length / size), size + context)
    np.testing.assert_array_equal(framed[0, :context], 0)
    np.testing.assert_array_equal(framed[:, context:].reshape(-1)[:length], samples)
    assert chunk(np.zeros(0, dtype=np.float32)).shape == (0, 576)


# --------------------------------------------------------------------------------------------
# Speech segments on real speech
# --------------------------------------------------------------------------------------------
SILENCE_S = 0.6
ONE_PER_VOICE = 500
"""``min_silence_ms`` for a recording's two words to be one segment: they are 0.2 to 0.4 s apart."""


def _voice_alone(clip: np.ndarray, vad: Callable[[np.ndarray], list[float]], **options: Any) -> list[Segment]:
    """The segments of ``clip`` between 0.6 s and 1 s of silence, in seconds from the clip's start."""
    lead = np.zeros(int(SILENCE_S * RATE), np.float32)
    samples = np.concatenate([lead, clip, np.zeros(RATE, np.float32)])
    found = speech_segments(vad(samples), sample_rate=RATE, chunk=CHUNK, length=len(samples), **options)
    return [Segment(s.start_s - SILENCE_S, s.end_s - SILENCE_S, s.confidence) for s in found]


def _speech_extent(samples: np.ndarray) -> tuple[float, float]:
    """Where the voice is (20 ms RMS above a hundredth of its peak): first and last such instant, in seconds."""
    rms = np.sqrt(np.convolve(samples.astype(np.float64) ** 2, np.ones(320) / 320, mode="same"))
    loud = np.flatnonzero(rms > 0.01 * rms.max())
    return loud[0] / RATE, loud[-1] / RATE


def test_each_voice_is_one_segment_and_noise_none(
    clips: dict[str, np.ndarray], vad: Callable[[np.ndarray], list[float]]
) -> None:
    """Each recording is two words ("front ... center") 0.2 to 0.4 s apart: one segment once pauses that short do
    not end speech; with silero's defaults (100 ms) one or two (one per word)."""
    for name in VOICES:
        [segment] = _voice_alone(clips[name], vad, min_silence_ms=ONE_PER_VOICE)
        spoken = _speech_extent(clips[name])
        assert -0.1 < segment.start_s < segment.end_s < len(clips[name]) / RATE + 0.1, (name, segment)  # in the clip
        assert abs(segment.start_s - spoken[0]) < 0.15 and abs(segment.end_s - spoken[1]) < 0.15, (name, spoken)
        assert 0.9 < segment.confidence <= 1.0
        words = _voice_alone(clips[name], vad)
        assert 1 <= len(words) <= 2, (name, words)
        assert (words[0].start_s, words[-1].end_s) == (segment.start_s, segment.end_s)
    assert speech_segments(vad(clips[NOISE]), sample_rate=RATE, chunk=CHUNK) == []
    assert _voice_alone(clips[NOISE], vad) == []


def _composed(clips: dict[str, np.ndarray]) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """Voices with silence and noise between; which voice starts where, in seconds."""
    parts: list[np.ndarray] = []
    placed: list[tuple[str, float]] = []
    silence = np.zeros(int(0.8 * RATE), dtype=np.float32)
    for name in (None, "Front_Center.wav", None, NOISE, "Rear_Right.wav", NOISE, "Side_Left.wav", None, NOISE,
                 "Rear_Center.wav", None):  # fmt: skip
        if name in VOICES:
            placed.append((name, sum(len(part) for part in parts) / RATE))
        parts.append(silence if name is None else clips[name])
    return np.concatenate(parts), placed


def test_a_composed_clip_gives_each_voice_where_it_was_put(
    clips: dict[str, np.ndarray], vad: Callable[[np.ndarray], list[float]]
) -> None:
    """Within 100 ms of where each voice was put plus where its speech is when alone (between silences)."""
    samples, placed = _composed(clips)
    found = speech_segments(
        vad(samples), sample_rate=RATE, chunk=CHUNK, length=len(samples), min_silence_ms=ONE_PER_VOICE
    )
    assert len(found) == len(placed), (found, placed)
    for segment, (name, offset) in zip(found, placed, strict=True):
        [alone] = _voice_alone(clips[name], vad, min_silence_ms=ONE_PER_VOICE)
        assert abs(segment.start_s - (offset + alone.start_s)) < 0.1, (name, segment, offset, alone)
        assert abs(segment.end_s - (offset + alone.end_s)) < 0.1, (name, segment, offset, alone)


def test_speech_segments_are_silero_get_speech_timestamps(
    clips: dict[str, np.ndarray], vad: Callable[[np.ndarray], list[float]]
) -> None:
    """silero's own end-to-end function (its OnnxWrapper over its framing, then its state machine) gives the same
    segments, to the sample, on real speech."""
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    model = load_silero_vad(onnx=True)
    composed, _ = _composed(clips)
    for samples in [composed, *clips.values()]:
        for options in ({}, {"min_silence_duration_ms": 300}, {"threshold": 0.7, "speech_pad_ms": 100}):
            ours = speech_segments(
                vad(samples),
                sample_rate=RATE,
                chunk=CHUNK,
                length=len(samples),
                threshold=options.get("threshold", 0.5),
                min_silence_ms=options.get("min_silence_duration_ms", 100),
                speech_pad_ms=options.get("speech_pad_ms", 30),
            )
            theirs = get_speech_timestamps(torch.from_numpy(samples), model, sampling_rate=RATE, **options)
            assert _samples(ours) == [(t["start"], t["end"]) for t in theirs], options


# --------------------------------------------------------------------------------------------
# The state machine against silero's, and the live tracker against both
# --------------------------------------------------------------------------------------------
def _probability_runs(rng: np.random.Generator, chunks: int) -> list[float]:
    """Runs of speech, pauses and in-between values (between the two thresholds), as a model gives them."""
    values: list[float] = []
    while len(values) < chunks:
        low, high = [(0.0, 0.3), (0.3, 0.55), (0.5, 1.0)][rng.integers(3)]
        values += rng.uniform(low, high, int(rng.integers(1, 30))).tolist()
    return values[:chunks]


def _cases() -> Iterator[tuple[list[float], dict[str, Any], int, int]]:
    rng = np.random.default_rng(11)
    for case in range(300):
        rate, size = [(16_000, 512), (8_000, 256)][case % 2]
        probabilities = _probability_runs(rng, int(rng.integers(0, 400)))
        options = {
            "threshold": float(rng.choice([0.3, 0.5, 0.6])),
            "min_speech_ms": int(rng.choice([0, 100, 250, 600])),
            "min_silence_ms": int(rng.choice([0, 30, 100, 300])),
            "speech_pad_ms": int(rng.choice([0, 30, 100, 250])),
            "max_speech_s": float(rng.choice([math.inf, math.inf, 0.5, 1.0, 3.0])),
        }
        if case % 5 == 0:
            options["neg_threshold"] = float(options["threshold"]) - 0.05
        length = len(probabilities) * size - int(rng.integers(0, size)) if probabilities else 0
        yield probabilities, options, rate, length


def test_speech_segments_are_silero_state_machine() -> None:
    from silero_vad import get_speech_timestamps_from_probs

    for probabilities, options, rate, length in _cases():
        ours = speech_segments(
            probabilities, sample_rate=rate, chunk=rate // 16_000 * 256 + 256, length=length, **options
        )
        theirs = get_speech_timestamps_from_probs(
            probabilities,
            sampling_rate=rate,
            threshold=options["threshold"],
            neg_threshold=options.get("neg_threshold"),
            min_speech_duration_ms=options["min_speech_ms"],
            min_silence_duration_ms=options["min_silence_ms"],
            speech_pad_ms=options["speech_pad_ms"],
            max_speech_duration_s=options["max_speech_s"],
            audio_length_samples=length,
        )
        assert _samples(ours, rate) == [(t["start"], t["end"]) for t in theirs], options
        for segment in ours:
            assert options["threshold"] <= segment.confidence <= max(probabilities)


def _track(probabilities: list[float], length: int | None, **options: Any) -> list[list[SpeechEvent]]:
    """The tracker's events, as returned by each push then by finish."""
    tracker = SpeechTracker(**options)
    return [tracker.push(probability) for probability in probabilities] + [tracker.finish(length)]


def _as_segments(batches: list[list[SpeechEvent]]) -> list[Segment]:
    events = [event for batch in batches for event in batch]
    assert [event.kind for event in events] == ["speech_start", "speech_end"] * (len(events) // 2)
    assert all(a.time_s <= b.time_s for a, b in itertools.pairwise(events))
    return [
        Segment(start.time_s, end.time_s, end.confidence) for start, end in zip(events[::2], events[1::2], strict=True)
    ]


def test_speech_tracker_agrees_with_speech_segments() -> None:
    for probabilities, options, rate, length in _cases():
        size = rate // 16_000 * 256 + 256
        batches = _track(probabilities, length, sample_rate=rate, chunk=size, **options)
        expected = speech_segments(probabilities, sample_rate=rate, chunk=size, length=length, **options)
        assert _as_segments(batches) == expected, options


def test_speech_tracker_on_real_speech_is_live(
    clips: dict[str, np.ndarray], vad: Callable[[np.ndarray], list[float]]
) -> None:
    """On the composed clip: the same segments, each start told about min_speech (250 ms) after speech began and
    each end once min_silence (100 ms) of pause confirmed it, not at the end of the stream."""
    samples, _ = _composed(clips)
    probabilities = vad(samples)
    batches = _track(probabilities, len(samples), sample_rate=RATE, chunk=CHUNK)
    segments = speech_segments(probabilities, sample_rate=RATE, chunk=CHUNK, length=len(samples))
    assert _as_segments(batches) == segments and len(segments) >= 4
    pad = 0.03
    for index, batch in enumerate(batches):
        now = (index + 1) * CHUNK / RATE  # the stream's time once this chunk was pushed
        for event in batch:
            if event.kind == "speech_start":
                assert now - (event.time_s + pad) <= 0.25 + 2 * CHUNK / RATE, (event, now)
            else:
                assert now - (event.time_s - pad) <= 0.1 + 2 * CHUNK / RATE, (event, now)


# --------------------------------------------------------------------------------------------
# Live streams: framing piece after piece
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("piece_s", [0.01, 0.1, 0.37])
def test_a_stream_framed_piece_by_piece_is_the_clip_framed_whole(sounds: dict[str, Path], piece_s: float) -> None:
    """48 kHz pieces of any length give the rows of the whole clip at 16 kHz, to resampling noise: the cuts
    between pieces leave no trace."""
    wav = decode_audio(sounds["Front_Center.wav"].read_bytes(), **LIMITS)
    whole = chunk(to_model_rate(wav, RATE), CHUNK, 64)
    framer = StreamFramer(wav.sample_rate, RATE, CHUNK, 64)
    step = int(piece_s * wav.sample_rate)
    pieces = [wav.samples[i : i + step] for i in range(0, len(wav.samples), step)]
    rows = [framer.push(p, last=i == len(pieces) - 1) for i, p in enumerate(pieces)]
    streamed = np.concatenate([r for r in rows if len(r)])
    assert streamed.shape == whole.shape
    assert np.abs(streamed - whole).max() < 1e-3
    assert framer.framed == len(whole) * CHUNK


def test_a_stream_at_the_models_rate_is_framed_exactly() -> None:
    samples = np.random.default_rng(3).uniform(-1, 1, 5000).astype(np.float32)
    framer = StreamFramer(RATE, RATE, CHUNK, 64)
    rows = np.concatenate(
        [framer.push(samples[:700]), framer.push(samples[700:4000]), framer.push(samples[4000:], last=True)]
    )
    assert np.array_equal(rows, chunk(samples, CHUNK, 64))
