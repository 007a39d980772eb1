"""The public wire contract, version 1: what producers send to the mesh and what comes back.

This module is the single source of truth for the public protocol. The services' library
(``natriton.messages``) re-exports these types and adds the internal messages; ``docs/protocol.md``,
the JSON Schemas and the AsyncAPI document in ``docs/`` are written from (and checked against) it.

Rules:
- every Struct is frozen and keyword-only; a message sent on its own is tagged with an explicit
  snake_case ``type`` so renaming a class never changes the wire;
- fields are only ever added, with defaults; never reordered or retyped (anything else is a new tag
  or a ``natriton.v2`` subject); unknown fields are ignored so older readers keep working;
- tensors are shape + Triton datatype + raw little-endian bytes, never lists of numbers;
- request id, deadline, results destination and trace context travel in NATS headers, not in bodies.

Only ``msgspec`` is needed to use this module.
"""

from __future__ import annotations

import enum
import time
from typing import Any, Final, Generic, Literal, TypeAlias, TypeVar

import msgspec

_STRUCT_OPTIONS: Final[dict[str, Any]] = {"frozen": True, "kw_only": True, "tag_field": "type"}

# --------------------------------------------------------------------------------------------
# Subjects
# --------------------------------------------------------------------------------------------
SUBJECT_PREFIX: Final = "natriton.v1"
INFER_SUBJECT: Final = f"{SUBJECT_PREFIX}.infer"
"""Ingest's public endpoint (queue group ``natriton.ingest``): request/reply or fire-and-forget."""
RESULTS_PREFIX: Final = f"{SUBJECT_PREFIX}.results"
"""Shared results subjects ``natriton.v1.results.<model>`` (opt-in with ``Natriton-Results-To: shared``)."""
SHARED_RESULTS: Final = "shared"
"""The value of ``Natriton-Results-To`` that selects the shared per-model results subject."""
RESERVED_SUBJECT_PREFIXES: Final = ("natriton.", "$")
"""Prefixes of subjects a producer may not name as its results destination: the mesh's namespace (so nobody can
inject answers into the mesh or onto the shared results subjects) and the server's own (``$JS``, ``$SRV``, …)."""
RESERVED_SUBJECTS: Final = ("natriton",)
"""Subjects a producer may not name as its results destination."""


def is_reserved_subject(subject: str) -> bool:
    """Whether ``subject`` belongs to the mesh or the server, so results may not be sent there."""
    return subject in RESERVED_SUBJECTS or subject.startswith(RESERVED_SUBJECT_PREFIXES)


def is_results_destination(value: str) -> bool:
    """Whether ``value`` is a valid ``Natriton-Results-To``: ``shared``, or a plain subject outside the reserved."""
    return value == SHARED_RESULTS or (is_publish_subject(value) and not is_reserved_subject(value))


def results_subject(model: str) -> str:
    """The shared results subject of ``model`` (``_invalid`` when the name is not a subject token)."""
    return f"{RESULTS_PREFIX}.{model if is_subject_token(model) else '_invalid'}"


def is_subject_token(token: str) -> bool:
    """Whether ``token`` can be one element of a NATS subject (no dots, wildcards, spaces)."""
    return bool(token) and token.isprintable() and not any(c in token for c in ". *>\t")


def is_publish_subject(subject: str) -> bool:
    """Whether ``subject`` is a valid NATS subject to publish to (no wildcards, no empty tokens)."""
    return 0 < len(subject) <= 256 and all(is_subject_token(t) for t in subject.split("."))


# --------------------------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------------------------
class Header:
    """NATS header names of the public protocol."""

    REQUEST_ID: Final = "Natriton-Request-Id"
    """Producer's id for the request (at most :data:`MAX_REQUEST_ID_LENGTH` printable characters); echoed back
    untouched. Ids need not be unique: the mesh correlates on its own ids, never on this one."""
    TIMEOUT_MS: Final = "Natriton-Timeout-Ms"
    """Relative budget in milliseconds from arrival at ingest."""
    DEADLINE: Final = "Natriton-Deadline"
    """Absolute deadline, Unix epoch milliseconds. Wins over ``Natriton-Timeout-Ms`` when both are sent."""
    RESULTS_TO: Final = "Natriton-Results-To"
    """Fire-and-forget only: the subject the answer (result or error) is published on, or ``shared``."""
    CONTENT_TYPE: Final = "Content-Type"
    """``application/msgpack`` (default) or ``application/json``; the reply uses the request's encoding."""
    CACHE: Final = "Natriton-Cache"
    """On replies: ``hit`` when answered from the result cache, ``miss`` otherwise."""
    TRACEPARENT: Final = "traceparent"
    """W3C trace context; the mesh's spans join the producer's trace."""
    SERVICE_ERROR: Final = "Nats-Service-Error"
    """On error replies (NATS micro convention): the human-readable message."""
    SERVICE_ERROR_CODE: Final = "Nats-Service-Error-Code"
    """On error replies (NATS micro convention): the HTTP-like number of the error code."""


JSON: Final = "application/json"
MSGPACK: Final = "application/msgpack"
MAX_REQUEST_ID_LENGTH: Final = 128


def is_valid_request_id(value: str) -> bool:
    """Whether ``value`` is a valid ``Natriton-Request-Id``: 1 to 128 printable characters."""
    return 0 < len(value) <= MAX_REQUEST_ID_LENGTH and value.isprintable()


MAX_ERROR_MESSAGE_CHARS: Final = 512
"""Error messages travel in the ``Nats-Service-Error`` header too: one printable line of at most this many."""


def one_line(text: str, limit: int = MAX_ERROR_MESSAGE_CHARS) -> str:
    """``text`` as one printable line of at most ``limit`` (>= 5) characters, for an error message: characters
    that are not printable (CR, LF, ...) are escaped; the middle of a longer text is cut (its end says where)."""

    def cut(value: str) -> str:
        half = (limit - 3) // 2
        return value if len(value) <= limit else f"{value[:half]}...{value[len(value) - half :]}"

    text = cut(text)
    return text if text.isprintable() else cut("".join(c if c.isprintable() else repr(c)[1:-1] for c in text))


def now_ms() -> int:
    """Wall-clock time in Unix epoch milliseconds (the unit of ``Natriton-Deadline``)."""
    return int(time.time() * 1000)


# --------------------------------------------------------------------------------------------
# Error codes
# --------------------------------------------------------------------------------------------
class ErrorCode(enum.StrEnum):
    """What went wrong, in a form a client can branch on."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    OVERLOADED = "overloaded"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"

    @property
    def status(self) -> int:
        """The HTTP-like number sent in ``Nats-Service-Error-Code``."""
        return _STATUS[self]

    @property
    def retryable(self) -> bool:
        """Whether sending the same request again later may succeed."""
        return self in (ErrorCode.DEADLINE_EXCEEDED, ErrorCode.OVERLOADED, ErrorCode.UNAVAILABLE)

    @classmethod
    def from_status(cls, status: int) -> ErrorCode | None:
        """The code a ``Nats-Service-Error-Code`` number stands for (None for a number the mesh never sends)."""
        return next((code for code, number in _STATUS.items() if number == status), None)


_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.OVERLOADED: 429,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.DEADLINE_EXCEEDED: 504,
}


# --------------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------------
class Tensor(msgspec.Struct, frozen=True, kw_only=True):
    """One named tensor: Triton datatype name (``FP32``, ``UINT8``, ...), shape, raw little-endian bytes."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: bytes


# --------------------------------------------------------------------------------------------
# What a producer sends to ``natriton.v1.infer``
# --------------------------------------------------------------------------------------------
class ImageInput(msgspec.Struct, tag="image", **_STRUCT_OPTIONS):
    """An encoded image (JPEG or PNG); preprocess decodes it and shapes it as the model declares."""

    data: bytes


class TensorInput(msgspec.Struct, tag="tensors", **_STRUCT_OPTIONS):
    """Ready-made tensors, one per model input, each with the batch dimension N first (one answer per item)."""

    tensors: tuple[Tensor, ...]


class TextInput(msgspec.Struct, tag="text", **_STRUCT_OPTIONS):
    """Text for language models; preprocess tokenises it with the model's declared tokenizer."""

    text: str


class AudioInput(msgspec.Struct, tag="audio", **_STRUCT_OPTIONS):
    """Audio for speech models (``natriton.kind: vad``): an encoded file in ``data`` (WAV, FLAC or OGG), or raw PCM
    in ``pcm`` (INT16 or FP32, shape ``[frames]`` or ``[frames, channels]``) with its ``sample_rate``. Preprocess
    mixes it to mono and resamples it to the model's rate."""

    data: bytes = b""
    pcm: Tensor | None = None
    sample_rate: int = 0


InputPayload: TypeAlias = ImageInput | TensorInput | TextInput | AudioInput


class InferRequest(msgspec.Struct, tag="infer_request", **_STRUCT_OPTIONS):
    """An inference request. ``version`` empty means "as the model's routing policy says" (default: latest)."""

    model: str
    input: InputPayload
    version: str = ""
    top_k: int = 5
    use_cache: bool = True


class _NoOtherRequest(msgspec.Struct, tag="_no_other_request", **_STRUCT_OPTIONS):
    """Never sent: it only makes the request a tagged *union*, so msgspec insists on the ``type`` field."""


PublicRequest: TypeAlias = InferRequest | _NoOtherRequest


# --------------------------------------------------------------------------------------------
# What comes back
# --------------------------------------------------------------------------------------------
class ClassScore(msgspec.Struct, frozen=True, kw_only=True):
    """One class of a classification: index into the model's label set, its name, softmax probability."""

    index: int
    label: str
    score: float


class Classification(msgspec.Struct, tag="classification", **_STRUCT_OPTIONS):
    """The top-k classes, best first."""

    classes: tuple[ClassScore, ...]


class Detection(msgspec.Struct, frozen=True, kw_only=True):
    """One detected object: class name, score, box in pixels of the original image (x1, y1, x2, y2)."""

    label: str
    score: float
    box: tuple[float, float, float, float]


class Detections(msgspec.Struct, tag="detections", **_STRUCT_OPTIONS):
    """Objects found in an image after non-maximum suppression, best first."""

    detections: tuple[Detection, ...]
    image_width: int
    image_height: int


class Embedding(msgspec.Struct, tag="embedding", **_STRUCT_OPTIONS):
    """A vector representation (e.g. of a sentence), L2-normalised when the model says so."""

    vector: Tensor


class RawOutputs(msgspec.Struct, tag="raw_outputs", **_STRUCT_OPTIONS):
    """The model's output tensors for one item as Triton returned them (batch dimension 1 kept)."""

    tensors: tuple[Tensor, ...]


class SpeechSegment(msgspec.Struct, frozen=True, kw_only=True):
    """Speech from ``start_s`` to ``end_s`` (seconds from the start of the audio); ``confidence`` is the highest
    speech probability the model gave within it."""

    start_s: float
    end_s: float
    confidence: float


class SpeechSegments(msgspec.Struct, tag="speech_segments", **_STRUCT_OPTIONS):
    """Where an audio clip has speech, in order (none: no speech); ``duration_s`` is the clip's length."""

    segments: tuple[SpeechSegment, ...]
    duration_s: float


ItemResult: TypeAlias = Classification | Detections | Embedding | RawOutputs | SpeechSegments


class Batch(msgspec.Struct, tag="batch", **_STRUCT_OPTIONS):
    """The answer to a tensor request with N > 1 items: one result per item, in the order of the items."""

    items: tuple[ItemResult, ...]


Result: TypeAlias = Classification | Detections | Embedding | RawOutputs | SpeechSegments | Batch


class InferResponse(msgspec.Struct, tag="infer_response", **_STRUCT_OPTIONS):
    """A successful answer. ``cached`` is true when it came from the result cache without inference."""

    request_id: str
    model: str
    version: str
    result: Result
    cached: bool = False

    def items(self) -> tuple[ItemResult, ...]:
        """One result per item of the request, whether it had one item or a batch of N."""
        return self.result.items if isinstance(self.result, Batch) else (self.result,)


class ErrorReply(msgspec.Struct, tag="error", **_STRUCT_OPTIONS):
    """A typed failure. ``retry_after_ms`` is a hint for ``overloaded``/``unavailable``."""

    request_id: str
    code: ErrorCode
    message: str
    retry_after_ms: int | None = None


Reply: TypeAlias = InferResponse | ErrorReply


# --------------------------------------------------------------------------------------------
# Cameras: per-frame results and events, published to JetStream (replayable)
# --------------------------------------------------------------------------------------------
DETECTIONS_PREFIX: Final = f"{SUBJECT_PREFIX}.detections"
"""``natriton.v1.detections.<camera>``: one :class:`FrameResult` per frame of the camera, in frame order."""
EVENTS_PREFIX: Final = f"{SUBJECT_PREFIX}.events"
"""``natriton.v1.events.<camera>``: :class:`TrackAppeared`, :class:`TrackLeft` and :class:`TrackCount` events."""
CAMERA_RESULTS_STREAM: Final = "NATRITON_CAMERA_RESULTS"
"""The JetStream stream that keeps both (replay a camera with any JetStream consumer)."""


def detections_subject(camera: str) -> str:
    """The subject a camera's frame results are published on."""
    return f"{DETECTIONS_PREFIX}.{camera}"


def events_subject(camera: str) -> str:
    """The subject a camera's events are published on."""
    return f"{EVENTS_PREFIX}.{camera}"


class TrackedObject(msgspec.Struct, frozen=True, kw_only=True):
    """A detection followed over frames: ``track_id`` stays the same while the tracker follows the object."""

    track_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]
    """In pixels of the frame: x1, y1, x2, y2."""


class FrameResult(msgspec.Struct, tag="frame_result", **_STRUCT_OPTIONS):
    """What one frame of a camera contained (or why it could not be analysed)."""

    camera: str
    frame_number: int
    """The frame's number among the frames sampled from the source (0, 1, 2, …; consecutive)."""
    pts_s: float | None = None
    """Presentation time in the source, seconds (``None`` when the source gave none)."""
    captured_ms: int = 0
    """When the frame was read from the source, Unix epoch milliseconds."""
    published_ms: int = 0
    """When this result was published; ``published_ms - captured_ms`` is the frame's end-to-end latency."""
    width: int = 0
    height: int = 0
    objects: tuple[TrackedObject, ...] = ()
    reused: bool = False
    """True when the change gate found the frame unchanged and reused the previous frame's detections."""
    model: str = ""
    version: str = ""
    error: ErrorCode | None = None
    """Set when the frame could not be analysed (``objects`` then repeats nothing); see ``error_message``."""
    error_message: str = ""


class TrackAppeared(msgspec.Struct, tag="track_appeared", **_STRUCT_OPTIONS):
    """A new track: the object's first box, label and score, and the frame it was first seen in."""

    camera: str
    track_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]
    frame_number: int
    timestamp: float
    """When the frame was captured, Unix epoch seconds."""


class TrackLeft(msgspec.Struct, tag="track_left", **_STRUCT_OPTIONS):
    """A track ended: not seen for long enough (or the camera stopped). Times are those of its first and last
    frames."""

    camera: str
    track_id: int
    label: str
    first_frame: int
    last_frame: int
    first_timestamp: float
    last_timestamp: float
    frames_seen: int
    last_box: tuple[float, float, float, float]
    frame_number: int
    """The frame at which the track was declared gone."""
    timestamp: float


class TrackCount(msgspec.Struct, tag="track_count", **_STRUCT_OPTIONS):
    """The number of tracks present, in total and per label; sent when it changes (and on the first frame)."""

    camera: str
    frame_number: int
    timestamp: float
    active: int
    by_label: dict[str, int]


CameraEvent: TypeAlias = TrackAppeared | TrackLeft | TrackCount


# --------------------------------------------------------------------------------------------
# Live audio: a producer streams chunks of one stream; speech events come back on the stream's subject
# --------------------------------------------------------------------------------------------
AUDIO_CHUNKS_PREFIX: Final = f"{SUBJECT_PREFIX}.audio.chunks"
"""``natriton.v1.audio.chunks.<stream>``: the producer publishes the stream's :class:`AudioChunk` here, in order."""
AUDIO_EVENTS_PREFIX: Final = f"{SUBJECT_PREFIX}.audio.events"
"""``natriton.v1.audio.events.<stream>``: :class:`VoiceActivity`, :class:`SpeechStarted`, :class:`SpeechEnded` and
:class:`AudioStreamEnded` of the stream, in order."""
AUDIO_STATE_PREFIX: Final = f"{SUBJECT_PREFIX}.audio.state"
"""``natriton.v1.audio.state.<stream>``: a request here (any body) is answered with the stream's
:class:`AudioStreamState` (or a ``not_found`` :class:`ErrorReply`)."""


def audio_chunks_subject(stream: str) -> str:
    """Where a producer publishes the chunks of ``stream`` (a subject token: letters, digits, ``_`` and ``-``)."""
    return f"{AUDIO_CHUNKS_PREFIX}.{stream}"


def audio_events_subject(stream: str) -> str:
    """Where the mesh publishes the speech events of ``stream``."""
    return f"{AUDIO_EVENTS_PREFIX}.{stream}"


def audio_state_subject(stream: str) -> str:
    """Where the state of ``stream`` is asked for."""
    return f"{AUDIO_STATE_PREFIX}.{stream}"


class AudioChunk(msgspec.Struct, tag="audio_chunk", **_STRUCT_OPTIONS):
    """The next piece of a live audio stream: ``seq`` counts from 0 without gaps (pieces that arrive out of order
    are put back in order); any length, any of :class:`AudioInput`'s forms, the same sample rate throughout.
    ``end`` closes the stream (its last speech is ended and its state freed)."""

    seq: int
    audio: AudioInput
    model: str = "silero_vad"
    end: bool = False


class AudioChunkAck(msgspec.Struct, tag="audio_chunk_ack", **_STRUCT_OPTIONS):
    """The answer to a chunk published with a reply subject: taken (its speech events follow on the stream's
    events subject)."""

    stream: str
    seq: int


class VoiceActivity(msgspec.Struct, tag="voice_activity", **_STRUCT_OPTIONS):
    """The speech probability of each 32 ms model chunk that a piece of the stream completed, the first starting at
    ``start_s`` seconds into the stream (``chunk_s`` apart)."""

    stream: str
    seq: int
    start_s: float
    chunk_s: float
    probabilities: tuple[float, ...]


class SpeechStarted(msgspec.Struct, tag="speech_start", **_STRUCT_OPTIONS):
    """Speech began at ``time_s`` seconds into the stream (sent once it is sure: ~0.25 s later)."""

    stream: str
    time_s: float
    confidence: float


class SpeechEnded(msgspec.Struct, tag="speech_end", **_STRUCT_OPTIONS):
    """Speech ended at ``time_s``; ``confidence`` is the segment's highest speech probability."""

    stream: str
    time_s: float
    confidence: float


class AudioStreamEnded(msgspec.Struct, tag="audio_stream_ended", **_STRUCT_OPTIONS):
    """The stream's state was freed: ``end`` (the producer said so), ``quiet`` (no chunk for a while) or ``moved``
    (another ingest copy owns it now: after a copy joined or died, it starts from a fresh state)."""

    stream: str
    reason: Literal["end", "quiet", "moved"]
    time_s: float


AudioEvent: TypeAlias = VoiceActivity | SpeechStarted | SpeechEnded | AudioStreamEnded
AudioChunkAnswer: TypeAlias = AudioChunkAck | ErrorReply


class AudioStreamState(msgspec.Struct, tag="audio_stream_state", **_STRUCT_OPTIONS):
    """Where a live stream stands: its owner (an ingest instance), the next ``seq`` it waits for, seconds of
    audio done, whether speech is going on, and how many pieces wait for a missing one."""

    stream: str
    owner: str
    next_seq: int
    time_s: float
    speaking: bool
    waiting: int = 0


AudioStreamStateAnswer: TypeAlias = AudioStreamState | ErrorReply


class AudioStreamStateRequest(msgspec.Struct, tag="audio_stream_state_request", **_STRUCT_OPTIONS):
    """Asks where a live audio stream stands (its subject names the stream; an empty body asks the same)."""


# --------------------------------------------------------------------------------------------
# Liveness: every running copy of ingest says so a few times a second
# --------------------------------------------------------------------------------------------
INGEST_HEARTBEAT_SUBJECT: Final = f"{SUBJECT_PREFIX}.heartbeat.ingest"
"""Every ingest copy publishes a :class:`Heartbeat` here (JSON) every ``interval_ms``. A producer that watches it
knows when the copy holding its request died, and sends the request again (the client library does this)."""


class Heartbeat(msgspec.Struct, tag="heartbeat", **_STRUCT_OPTIONS):
    """One copy of a service is alive (or, with ``leaving``, draining: it finishes what it holds, takes nothing new).

    A copy silent for ``dead_after_ms`` is dead, and so is one whose ``boot`` changed (it restarted): whatever it
    held is lost. Internal services publish the same message on internal subjects.
    """

    service: str
    instance: str
    """The copy's instance id (may stay the same across restarts)."""
    boot: str
    """Unique per process start."""
    interval_ms: int
    dead_after_ms: int
    leaving: bool = False
    up_ms: int = 0
    """How long the copy has been beating (copies agree from it on which of them have settled)."""
    shm_domain: str = ""
    """Which ``/dev/shm`` the copy sees (boot id and the mount's device and inode; '' for none or hand-off off):
    copies with the same value may hand tensors to each other through shared memory."""


# --------------------------------------------------------------------------------------------
# Codecs: build once per process, reuse.
# --------------------------------------------------------------------------------------------
T = TypeVar("T")


class Codec(Generic[T]):
    """A msgpack + JSON encoder/decoder pair for one message type (a Struct or a tagged union)."""

    def __init__(self, message_type: Any) -> None:
        self._decoder: msgspec.msgpack.Decoder[T] = msgspec.msgpack.Decoder(message_type)
        self._json_decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(message_type)
        self._encoder = msgspec.msgpack.Encoder()
        self._json_encoder = msgspec.json.Encoder()

    def decode(self, data: bytes, *, json: bool = False) -> T:
        """Decode, raising :class:`msgspec.ValidationError`/:class:`msgspec.DecodeError` on bad input, and only
        those, with a message that is :func:`one_line`: a string that is not UTF-8 and nesting deeper than Python's
        recursion limit (msgspec recurses into unknown fields too, and stops there) are a ``DecodeError`` too."""
        try:
            return self._json_decoder.decode(data) if json else self._decoder.decode(data)
        except msgspec.MsgspecError as exc:  # msgspec quotes a bad value as it came: CR, LF, megabytes
            message = str(exc)
            if len(message) > MAX_ERROR_MESSAGE_CHARS or not message.isprintable():
                raise type(exc)(one_line(message)) from exc
            raise
        except UnicodeDecodeError as exc:
            raise msgspec.DecodeError(f"a string is not valid UTF-8: {exc.reason} at byte {exc.start}") from exc
        except RecursionError as exc:
            raise msgspec.DecodeError("nested too deeply") from exc

    def encode(self, message: T, *, json: bool = False) -> bytes:
        """Encode as msgpack (default) or JSON (bytes become base64 strings)."""
        return self._json_encoder.encode(message) if json else self._encoder.encode(message)
