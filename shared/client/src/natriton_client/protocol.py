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
from typing import Any, Final, Generic, TypeAlias, TypeVar

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


InputPayload: TypeAlias = ImageInput | TensorInput | TextInput


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


ItemResult: TypeAlias = Classification | Detections | Embedding | RawOutputs


class Batch(msgspec.Struct, tag="batch", **_STRUCT_OPTIONS):
    """The answer to a tensor request with N > 1 items: one result per item, in the order of the items."""

    items: tuple[ItemResult, ...]


Result: TypeAlias = Classification | Detections | Embedding | RawOutputs | Batch


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
        """Decode, raising :class:`msgspec.ValidationError`/:class:`msgspec.DecodeError` on bad input."""
        return self._json_decoder.decode(data) if json else self._decoder.decode(data)

    def encode(self, message: T, *, json: bool = False) -> bytes:
        """Encode as msgpack (default) or JSON (bytes become base64 strings)."""
        return self._json_encoder.encode(message) if json else self._encoder.encode(message)
