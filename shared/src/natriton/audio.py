"""Audio for voice activity detection (silero VAD): decoding, resampling, silero's framing, and speech segments.

- :func:`decode_audio` (WAV, FLAC, OGG bytes) and :func:`pcm_audio` (a raw PCM tensor) give :class:`Audio`; every
  limit is checked from the header (frames, rate, channels) before any sample is decoded. Every failure is a
  :class:`~natriton.errors.MeshError`: ``payload_too_large`` for the size and duration limits (as for images),
  ``invalid_argument`` for anything else.
- :func:`to_model_rate` resamples to the model's rate (soxr), :func:`chunk` frames the samples as silero's
  ``OnnxWrapper`` feeds its model (a row per call: context + chunk).
- :func:`speech_segments` turns the model's per-chunk probabilities into segments exactly as silero's
  ``get_speech_timestamps`` does; :class:`SpeechTracker` does the same one probability at a time, for live streams.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass, field
from typing import Final, Literal, TypedDict

import numpy as np
import numpy.typing as npt
import soundfile
import soxr

from natriton.errors import ErrorCode, MeshError, invalid_argument
from natriton.profiles import VadProfile
from natriton.tensors import to_array, to_tensor
from natriton_client.protocol import AudioInput, Tensor, one_line

__all__ = [
    "Audio",
    "Segment",
    "SpeechEvent",
    "SpeechTracker",
    "chunk",
    "decode_audio",
    "pcm_audio",
    "speech_segments",
    "to_model_rate",
]

Samples = npt.NDArray[np.float32]

ACCEPTED_FORMATS: Final = frozenset({"WAV", "WAVEX", "FLAC", "OGG"})
"""libsndfile's names for the containers accepted (WAVEX: WAV with ``WAVE_FORMAT_EXTENSIBLE``, multichannel)."""
EXPECTED: Final = "WAV, FLAC or OGG expected"
MIN_RATE: Final = 8_000
MAX_RATE: Final = 192_000
MAX_CHANNELS: Final = 8
MIN_SILENCE_AT_MAX_SPEECH_MS: Final = 98
"""silero's ``min_silence_at_max_speech``: a pause that long is where an over-long segment may be cut."""
_RIFF_CHUNKS: Final = 64
"""RIFF chunks walked before ``data`` (more: the data size is taken from libsndfile, which clamps it)."""
_UNKNOWN_SIZES: Final = (0, 0xFFFFFFFF)
"""``data`` sizes that streaming writers put in a WAV header whose length they do not know yet."""


@dataclass(frozen=True, slots=True)
class Audio:
    """Decoded audio: mono float32 samples (the mean of the channels, as silero's ``read_audio`` mixes) at
    ``sample_rate`` Hz; ``channels`` says how many there were."""

    samples: Samples
    sample_rate: int
    channels: int = 1

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate


# --------------------------------------------------------------------------------------------
# Decoding and limits
# --------------------------------------------------------------------------------------------
def decode_audio(data: bytes, *, max_bytes: int, max_duration_s: float, max_channels: int = MAX_CHANNELS) -> Audio:
    """Decode WAV/FLAC/OGG bytes (libsndfile, in memory), checking size, rate, channels and duration from the
    header before any sample is decoded; a WAV whose ``data`` chunk is longer than the bytes sent is truncated."""
    if not data:
        raise invalid_argument(f"audio is empty ({EXPECTED})")
    if len(data) > max_bytes:
        raise MeshError(ErrorCode.PAYLOAD_TOO_LARGE, f"audio is {len(data):,} bytes; the limit is {max_bytes:,}")
    try:
        sound = soundfile.SoundFile(io.BytesIO(data))
    except MemoryError:
        raise
    except Exception as exc:  # LibsndfileError ("Format not recognised", "No 'data' chunk marker", ...)
        detail = getattr(exc, "error_string", "") or str(exc)
        raise invalid_argument(f"input is not decodable audio ({EXPECTED}): {one_line(detail)}") from exc
    with sound:
        if sound.format not in ACCEPTED_FORMATS:
            raise invalid_argument(f"audio format {sound.format} is not accepted ({EXPECTED})")
        check_header(sound.samplerate, sound.channels, max_channels)
        frames = sound.frames
        if sound.format in ("WAV", "WAVEX"):  # libsndfile clamps the header's length to the bytes present
            frames = max(frames, _wav_header_frames(data) or 0)
        check_duration(frames, sound.samplerate, max_duration_s)
        try:
            decoded = sound.read(frames, dtype="float32", always_2d=True)
        except MemoryError:
            raise
        except Exception as exc:
            raise invalid_argument(f"audio data is corrupt or truncated: {one_line(str(exc))}") from exc
        if len(decoded) < frames:
            raise invalid_argument(
                f"audio data is corrupt or truncated: the header says {frames:,} frames, {len(decoded):,} decoded"
            )
        return Audio(_mono(decoded), sound.samplerate, sound.channels)


def pcm_audio(
    samples: npt.NDArray[np.generic],
    sample_rate: int,
    *,
    max_duration_s: float,
    max_channels: int = MAX_CHANNELS,
) -> Audio:
    """Raw PCM as :class:`Audio`: int16 (full scale 32768) or float32 samples, shaped ``[frames]`` or
    ``[frames, channels]``; the same limits and errors as :func:`decode_audio`."""
    if samples.dtype not in (np.int16, np.float32):
        raise invalid_argument(f"PCM samples are {samples.dtype}; int16 or float32 expected")
    if samples.ndim not in (1, 2):
        raise invalid_argument(f"PCM samples have shape {samples.shape}; [frames] or [frames, channels] expected")
    frames = samples.reshape(-1, 1) if samples.ndim == 1 else samples
    check_header(int(sample_rate), frames.shape[1], max_channels)
    check_duration(len(frames), int(sample_rate), max_duration_s)
    if frames.dtype == np.int16:
        scaled = frames.astype(np.float32) / np.float32(32768)
    else:
        if not np.isfinite(frames).all():
            raise invalid_argument("PCM samples must be finite (no NaN or infinity)")
        scaled = frames.astype(np.float32, copy=False)
    return Audio(_mono(scaled), int(sample_rate), frames.shape[1])


def model_inputs(
    audio: AudioInput, profile: VadProfile, *, max_bytes: int, max_duration_s: float
) -> tuple[tuple[Tensor, Tensor], int]:
    """A request's audio as a vad model's inputs: its chunks ``[n, context + chunk]`` at the model's rate and a
    starting state of zeros ``[1, *state_shape]`` (a clip: a stream of its own); and its length in samples at the
    model's rate. A file in ``data`` or PCM in ``pcm`` with its ``sample_rate``: ``invalid_argument`` otherwise."""
    if audio.pcm is not None:
        if audio.data:
            raise invalid_argument("audio input: send a file in data or samples in pcm, not both")
        if audio.sample_rate <= 0:
            raise invalid_argument("audio input: pcm needs its sample_rate")
        if len(audio.pcm.data) > max_bytes:
            raise MeshError(
                ErrorCode.PAYLOAD_TOO_LARGE, f"audio is {len(audio.pcm.data):,} bytes; the limit is {max_bytes:,}"
            )
        decoded = pcm_audio(to_array(audio.pcm), audio.sample_rate, max_duration_s=max_duration_s)
    else:
        decoded = decode_audio(audio.data, max_bytes=max_bytes, max_duration_s=max_duration_s)
    samples = to_model_rate(decoded, profile.sample_rate)
    chunks = chunk(samples, profile.chunk_samples, profile.context_samples)
    state = np.zeros((1, *profile.state_shape), dtype=np.float32)
    return (to_tensor(profile.audio_input, chunks), to_tensor(profile.state_input, state)), len(samples)


def check_header(sample_rate: int, channels: int, max_channels: int = MAX_CHANNELS) -> None:
    """``invalid_argument`` for a rate outside 8,000 to 192,000 Hz, or no channels or more than ``max_channels``."""
    if not MIN_RATE <= sample_rate <= MAX_RATE:
        raise invalid_argument(f"audio sample rate is {sample_rate:,} Hz; {MIN_RATE:,} to {MAX_RATE:,} Hz expected")
    if not 1 <= channels <= max_channels:
        raise invalid_argument(f"audio has {channels} channels; 1 to {max_channels} expected")


def check_duration(frames: int, sample_rate: int, max_duration_s: float) -> None:
    """``invalid_argument`` for no samples, ``payload_too_large`` for more than ``max_duration_s`` seconds."""
    if frames <= 0:
        raise invalid_argument("audio has no samples")
    if frames / sample_rate > max_duration_s:
        raise MeshError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"audio is {frames / sample_rate:,.1f} s long; the limit is {max_duration_s:,.1f} s",
        )


def _wav_header_frames(data: bytes) -> int | None:
    """Frames the ``data`` chunk of a RIFF WAV declares (None when unknown: not RIFF, streamed, odd layout)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, block_align = 12, 0
    for _ in range(_RIFF_CHUNKS):
        if pos + 8 > len(data):
            return None
        kind, size = struct.unpack_from("<4sI", data, pos)
        if kind == b"fmt " and size >= 14 and pos + 22 <= len(data):
            block_align = struct.unpack_from("<H", data, pos + 20)[0]
        elif kind == b"data":
            return size // block_align if block_align and size not in _UNKNOWN_SIZES else None
        pos += 8 + size + (size & 1)
    return None


def _mono(frames: npt.NDArray[np.float32]) -> Samples:
    mono = frames[:, 0] if frames.shape[1] == 1 else frames.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def to_model_rate(audio: Audio, rate: int = 16_000) -> Samples:
    """``audio``'s samples at ``rate`` Hz (soxr, ``HQ``), float32 clipped to [-1, 1]."""
    samples = audio.samples
    if audio.sample_rate != rate:
        samples = soxr.resample(samples, audio.sample_rate, rate, quality="HQ")
    return np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False)


class StreamFramer:
    """A live stream as a vad model's chunks, piece after piece: resampled continuously (soxr's stream resampler
    keeps its filter across pieces, so the cuts between pieces leave no trace) and framed as :func:`chunk` frames a
    whole clip, the samples short of a chunk kept for the next piece."""

    def __init__(self, sample_rate: int, model_rate: int, chunk: int, context: int) -> None:
        self.sample_rate = sample_rate
        self.chunk = chunk
        self._resampler = (
            soxr.ResampleStream(sample_rate, model_rate, 1, dtype="float32", quality="HQ")
            if sample_rate != model_rate
            else None
        )
        self._pending = np.zeros(0, dtype=np.float32)
        self._context = np.zeros(context, dtype=np.float32)
        self.framed = 0
        """Samples (at the model's rate) framed so far: where the next row starts."""

    def push(self, samples: Samples, *, last: bool = False) -> Samples:
        """The rows ``[n, context + chunk]`` that ``samples`` complete (``last``: the stream ends, the rest is
        zero-padded into a final row); possibly none."""
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=last)
        samples = np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False)
        pending = np.concatenate([self._pending, samples])
        count = len(pending) // self.chunk
        if last and len(pending) % self.chunk:
            count += 1
            pending = np.concatenate([pending, np.zeros(count * self.chunk - len(pending), dtype=np.float32)])
        context = len(self._context)
        rows = np.zeros((count, context + self.chunk), dtype=np.float32)
        for i in range(count):
            rows[i, :context] = self._context
            rows[i, context:] = pending[i * self.chunk : (i + 1) * self.chunk]
            if context:
                self._context = rows[i, -context:].copy()
        self._pending = pending[count * self.chunk :].copy()
        self.framed += count * self.chunk
        return rows


def chunk(samples: Samples, chunk: int = 512, context: int = 64) -> Samples:
    """silero's framing, ``[n, context + chunk]``: row ``i`` is the last ``context`` samples of chunk ``i - 1``
    (zeros for the first) then chunk ``i``; the last chunk is zero-padded (``OnnxWrapper.__call__`` over
    ``get_speech_timestamps``' windows: 512 + 64 at 16 kHz, 256 + 32 at 8 kHz)."""
    if not 0 <= context <= chunk:
        raise ValueError(f"context ({context}) must be between 0 and the chunk ({chunk})")
    count = -(-len(samples) // chunk)
    body = np.zeros(count * chunk, dtype=np.float32)
    body[: len(samples)] = samples
    rows = body.reshape(count, chunk)
    framed = np.zeros((count, context + chunk), dtype=np.float32)
    framed[:, context:] = rows
    if count > 1 and context:
        framed[1:, :context] = rows[:-1, chunk - context :]
    return framed


# --------------------------------------------------------------------------------------------
# Speech segments: silero's get_speech_timestamps state machine
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Segment:
    """Speech from ``start_s`` to ``end_s`` (padded as silero pads); ``confidence`` is the highest per-chunk
    probability between its unpadded start and end (at least ``threshold``: speech starts there)."""

    start_s: float
    end_s: float
    confidence: float


@dataclass(frozen=True, slots=True)
class SpeechEvent:
    """``speech_start`` or ``speech_end`` at ``time_s`` in the stream (the times :func:`speech_segments` gives);
    ``confidence``: the highest probability in the segment so far (the segment's, on ``speech_end``)."""

    kind: Literal["speech_start", "speech_end"]
    time_s: float
    confidence: float


@dataclass(slots=True)
class _Raw:
    start: int
    end: int
    confidence: float


@dataclass(slots=True)
class _Machine:
    """silero's loop over probabilities (``get_speech_timestamps_from_probs``, ``use_max_poss_sil_at_max_speech``),
    in samples, before padding; ``start is None`` stands for silero's ``not triggered``."""

    chunk: int
    threshold: float
    neg_threshold: float
    min_speech: float
    min_silence: float
    max_speech: float
    min_silence_at_max: float
    index: int = 0
    start: int | None = None
    temp_end: int = 0
    prev_end: int = 0
    next_start: int = 0
    possible_ends: list[tuple[int, int]] = field(default_factory=list)
    history: list[float] = field(default_factory=list)
    """Probabilities since chunk ``history_from`` (the current segment's start): confidences after a cut."""
    history_from: int = 0

    def push(self, probability: float) -> list[_Raw]:
        """One chunk's probability; the segments it closes (kept ones only)."""
        closed = self._step(probability, self.index * self.chunk)
        self.index += 1
        if self.start is None:
            self.history.clear()
            self.history_from = self.index
        elif self.start // self.chunk > self.history_from:  # a cut: the new segment began at an earlier pause
            del self.history[: self.start // self.chunk - self.history_from]
            self.history_from = self.start // self.chunk
        return closed

    def finish(self, length: int) -> list[_Raw]:
        """The end of the audio (``length`` samples): the open segment, when long enough."""
        if self.start is not None and length - self.start > self.min_speech:
            return [self._close(length)]
        return []

    def peak(self) -> float:
        """The highest probability since the current segment began."""
        first = 0 if self.start is None else self.start // self.chunk - self.history_from
        return max(self.history[first:], default=0.0)

    def _close(self, end: int) -> _Raw:
        assert self.start is not None
        first = self.start // self.chunk - self.history_from
        last = max(-(-end // self.chunk) - self.history_from, first + 1)
        return _Raw(self.start, end, max(self.history[first:last]))

    def _step(self, probability: float, sample: int) -> list[_Raw]:
        self.history.append(probability)
        if probability >= self.threshold and self.temp_end:  # speech again after a pause
            silence = sample - self.temp_end
            if silence > self.min_silence_at_max:
                self.possible_ends.append((self.temp_end, silence))
            self.temp_end = 0
            if self.next_start < self.prev_end:
                self.next_start = sample
        if probability >= self.threshold and self.start is None:
            self.start = sample
            return []
        closed: list[_Raw] = []
        if self.start is not None and sample - self.start > self.max_speech:  # too long: cut at the longest pause
            if self.possible_ends:
                self.prev_end, silence = max(self.possible_ends, key=lambda end: end[1])
                closed.append(self._close(self.prev_end))
                self.next_start = self.prev_end + silence
                cut_start = self.next_start if self.next_start < self.prev_end + sample else None
                self.start = cut_start
                self.prev_end = self.next_start = self.temp_end = 0
                self.possible_ends = []
            else:
                closed.append(self._close(sample))
                self.start = None
                self.prev_end = self.next_start = self.temp_end = 0
                self.possible_ends = []
                return closed
        if probability < self.neg_threshold and self.start is not None:  # a pause: long enough ends the segment
            if not self.temp_end:
                self.temp_end = sample
            if sample - self.temp_end < self.min_silence:
                return closed
            if self.temp_end - self.start > self.min_speech:
                closed.append(self._close(self.temp_end))
            self.start = None
            self.prev_end = self.next_start = self.temp_end = 0
            self.possible_ends = []
        return closed


@dataclass(frozen=True, slots=True)
class _Settings:
    sample_rate: int
    chunk: int
    pad: float

    def seconds(self, sample: int) -> float:
        return sample / self.sample_rate


class SpeechRules(TypedDict):
    """The keyword arguments of :func:`speech_segments` and :class:`SpeechTracker` a model's profile sets."""

    sample_rate: int
    chunk: int
    threshold: float
    neg_threshold: float | None
    min_speech_ms: float
    min_silence_ms: float
    speech_pad_ms: float


def speech_rules(profile: VadProfile) -> SpeechRules:
    """A vad model's segment rules, from its ``natriton.*`` parameters."""
    return SpeechRules(
        sample_rate=profile.sample_rate,
        chunk=profile.chunk_samples,
        threshold=profile.threshold,
        neg_threshold=profile.neg_threshold,
        min_speech_ms=profile.min_speech_duration_ms,
        min_silence_ms=profile.min_silence_duration_ms,
        speech_pad_ms=profile.speech_pad_ms,
    )


def _machine(
    sample_rate: int,
    chunk: int,
    threshold: float,
    neg_threshold: float | None,
    min_speech_ms: float,
    min_silence_ms: float,
    speech_pad_ms: float,
    max_speech_s: float,
) -> tuple[_Machine, float]:
    if sample_rate <= 0 or chunk <= 0:
        raise ValueError(f"sample rate ({sample_rate}) and chunk ({chunk}) must be positive")
    pad = sample_rate * speech_pad_ms / 1000
    machine = _Machine(
        chunk=chunk,
        threshold=threshold,
        neg_threshold=max(threshold - 0.15, 0.01) if neg_threshold is None else neg_threshold,
        min_speech=sample_rate * min_speech_ms / 1000,
        min_silence=sample_rate * min_silence_ms / 1000,
        max_speech=sample_rate * max_speech_s - chunk - 2 * pad,
        min_silence_at_max=sample_rate * MIN_SILENCE_AT_MAX_SPEECH_MS / 1000,
    )
    return machine, pad


def speech_segments(
    probabilities: npt.ArrayLike,
    *,
    sample_rate: int,
    chunk: int,
    threshold: float = 0.5,
    neg_threshold: float | None = None,
    min_speech_ms: float = 250,
    min_silence_ms: float = 100,
    speech_pad_ms: float = 30,
    max_speech_s: float = math.inf,
    length: int | None = None,
) -> list[Segment]:
    """Speech in audio whose chunk ``i`` (``chunk`` samples at ``sample_rate`` Hz) had speech probability
    ``probabilities[i]``: silero's ``get_speech_timestamps`` exactly (its defaults; ``neg_threshold`` defaults to
    ``max(threshold - 0.15, 0.01)``). Speech starts at a chunk >= ``threshold`` and ends after ``min_silence_ms``
    below ``neg_threshold``; shorter than ``min_speech_ms`` is dropped; longer than ``max_speech_s`` is cut at its
    longest pause; each segment is padded by ``speech_pad_ms`` (half the gap when two are closer than two pads).
    ``length``: the audio's length in samples (default: ``len(probabilities) * chunk``)."""
    machine, pad = _machine(
        sample_rate, chunk, threshold, neg_threshold, min_speech_ms, min_silence_ms, speech_pad_ms, max_speech_s
    )
    values = np.asarray(probabilities, dtype=np.float64).reshape(-1).tolist()
    total = len(values) * chunk if length is None else length
    raw: list[_Raw] = []
    for probability in values:
        raw += machine.push(probability)
    raw += machine.finish(total)
    # silero's padding, in place and in the same order (starts and ends stay int or float as there)
    starts: list[float] = [segment.start for segment in raw]
    ends: list[float] = [segment.end for segment in raw]
    for i in range(len(raw)):
        if i == 0:
            starts[i] = int(max(0, starts[i] - pad))
        if i != len(raw) - 1:
            gap = starts[i + 1] - ends[i]
            if gap < 2 * pad:
                ends[i] += int(gap // 2)
                starts[i + 1] = int(max(0, starts[i + 1] - gap // 2))
            else:
                ends[i] = int(min(total, ends[i] + pad))
                starts[i + 1] = int(max(0, starts[i + 1] - pad))
        else:
            ends[i] = int(min(total, ends[i] + pad))
    return [
        Segment(start / sample_rate, end / sample_rate, segment.confidence)
        for start, end, segment in zip(starts, ends, raw, strict=True)
    ]


class SpeechTracker:
    """:func:`speech_segments` for a live stream: :meth:`push` one chunk's probability at a time, :meth:`finish` at
    the end; each returns the :class:`SpeechEvent` s it decided, in order.

    Fed a whole clip then finished, its events pair up into exactly :func:`speech_segments`' segments (same
    times). For that, an event waits until it is certain: ``speech_start`` until the speech is sure to outlast
    ``min_speech_ms`` (about that long after speech began; a shorter blip makes no event), ``speech_end`` until
    ``min_silence_ms`` of pause confirmed it and its padding cannot change (the next segment's start, or two pads
    of stream after the end). Memory: one float per chunk of the current segment.
    """

    def __init__(
        self,
        *,
        sample_rate: int,
        chunk: int,
        threshold: float = 0.5,
        neg_threshold: float | None = None,
        min_speech_ms: float = 250,
        min_silence_ms: float = 100,
        speech_pad_ms: float = 30,
        max_speech_s: float = math.inf,
    ) -> None:
        self._machine, pad = _machine(
            sample_rate, chunk, threshold, neg_threshold, min_speech_ms, min_silence_ms, speech_pad_ms, max_speech_s
        )
        self._settings = _Settings(sample_rate, chunk, pad)
        self._announced: int | None = None
        """The start (unpadded) of the segment whose ``speech_start`` was sent."""
        self._pending: _Raw | None = None
        """The last segment that closed: its ``speech_end`` waits for its padding to be certain."""

    def push(self, probability: float) -> list[SpeechEvent]:
        """One chunk's speech probability; the events it made certain."""
        machine = self._machine
        events: list[SpeechEvent] = []
        for segment in machine.push(float(probability)):
            events += self._kept(segment)
        sample = (machine.index - 1) * machine.chunk  # the chunk just pushed began here; the stream is longer
        start = machine.start
        if start is not None and start != self._announced:
            earliest_end = machine.temp_end or sample + 1  # where the open segment can end, at the earliest
            if earliest_end - start > machine.min_speech:
                events += self._started(start, machine.peak())
        if self._pending is not None:
            earliest_start = start if start is not None else sample + machine.chunk
            if earliest_start - self._pending.end >= 2 * self._settings.pad and (
                self._pending.end + self._settings.pad <= sample + 1
            ):
                events.append(self._ended(self._pending.end + self._settings.pad))
        return events

    def finish(self, length: int | None = None) -> list[SpeechEvent]:
        """The end of the stream (``length`` samples; default: every chunk whole); the events still due."""
        machine = self._machine
        total = machine.index * machine.chunk if length is None else length
        events: list[SpeechEvent] = []
        for segment in machine.finish(total):
            events += self._kept(segment)
        if self._pending is not None:
            events.append(self._ended(min(total, self._pending.end + self._settings.pad)))
        return events

    def _kept(self, segment: _Raw) -> list[SpeechEvent]:
        events = [] if segment.start == self._announced else self._started(segment.start, segment.confidence)
        self._pending = segment
        return events

    def _started(self, start: int, confidence: float) -> list[SpeechEvent]:
        pad = self._settings.pad
        events: list[SpeechEvent] = []
        padded: float = int(max(0, start - pad))
        if self._pending is not None:
            gap = start - self._pending.end
            if gap < 2 * pad:
                padded = int(max(0, start - gap // 2))
                events.append(self._ended(self._pending.end + int(gap // 2)))
            else:
                events.append(self._ended(self._pending.end + pad))
        # no pending end: the last one was sent once no start could come within two pads of it (or there was none)
        self._announced = start
        events.append(SpeechEvent("speech_start", self._settings.seconds(int(padded)), confidence))
        return events

    def _ended(self, end: float) -> SpeechEvent:
        assert self._pending is not None
        segment, self._pending = self._pending, None
        return SpeechEvent("speech_end", self._settings.seconds(int(end)), segment.confidence)
