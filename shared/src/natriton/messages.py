"""The wire contract, version 1: every message that crosses NATS, as msgspec Structs.

Rules (see docs/protocol.md):
- every Struct is frozen and keyword-only; messages sent on their own are tagged with an explicit
  snake_case ``type`` so renaming a class never changes the wire;
- fields are only ever added, with defaults; never reordered or retyped (anything else is a new tag
  or a ``natriton.v2`` subject); unknown fields are ignored so older readers keep working;
- tensors are shape + Triton datatype + raw little-endian bytes, never lists of numbers;
- request id, deadline and trace context travel in NATS headers (:mod:`natriton.headers`), not here.

The public messages (what producers send and receive) are :class:`InferRequest` and :data:`Reply`.
Everything under "internal" flows between the four services only.
"""

from __future__ import annotations

from typing import Any, Final, Generic, TypeAlias, TypeVar

import msgspec

from natriton.errors import ErrorCode

_STRUCT_OPTIONS: Final[dict[str, Any]] = {"frozen": True, "kw_only": True, "tag_field": "type"}


# --------------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------------
class Tensor(msgspec.Struct, frozen=True, kw_only=True):
    """One named tensor: Triton datatype name (``FP32``, ``UINT8``, ...), shape, raw little-endian bytes."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: bytes


class TensorSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a model declares for one input or output; ``shape`` excludes the batch dimension, -1 is variable."""

    name: str
    datatype: str
    shape: tuple[int, ...]


# --------------------------------------------------------------------------------------------
# Public: what a producer sends to ``natriton.v1.infer``
# --------------------------------------------------------------------------------------------
class ImageInput(msgspec.Struct, tag="image", **_STRUCT_OPTIONS):
    """An encoded image (JPEG or PNG); preprocess decodes it and shapes it as the model declares."""

    data: bytes


class TensorInput(msgspec.Struct, tag="tensors", **_STRUCT_OPTIONS):
    """Ready-made tensors, one per model input, each with the batch dimension (usually 1) first."""

    tensors: tuple[Tensor, ...]


class TextInput(msgspec.Struct, tag="text", **_STRUCT_OPTIONS):
    """Text for language models; preprocess tokenises it with the model's declared tokenizer."""

    text: str


InputPayload: TypeAlias = ImageInput | TensorInput | TextInput


class InferRequest(msgspec.Struct, tag="infer_request", **_STRUCT_OPTIONS):
    """An inference request. ``version`` empty means "the latest ready version"."""

    model: str
    input: InputPayload
    version: str = ""
    top_k: int = 5
    use_cache: bool = True


# --------------------------------------------------------------------------------------------
# Public: what comes back
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
    """The model's output tensors as they came from Triton (models without a known task)."""

    tensors: tuple[Tensor, ...]


Result: TypeAlias = Classification | Detections | Embedding | RawOutputs


class InferResponse(msgspec.Struct, tag="infer_response", **_STRUCT_OPTIONS):
    """A successful answer. ``cached`` is true when it came from the result cache without inference."""

    request_id: str
    model: str
    version: str
    result: Result
    cached: bool = False


class ErrorReply(msgspec.Struct, tag="error", **_STRUCT_OPTIONS):
    """A typed failure. ``retry_after_ms`` is a hint for ``overloaded``/``unavailable``."""

    request_id: str
    code: ErrorCode
    message: str
    retry_after_ms: int | None = None


Reply: TypeAlias = InferResponse | ErrorReply


# --------------------------------------------------------------------------------------------
# Internal: between services
# --------------------------------------------------------------------------------------------
class Job(msgspec.Struct, frozen=True, kw_only=True):
    """What every hop needs to know about the request it is working on."""

    model: str
    version: str
    task: str
    top_k: int = 5
    cache_key: str = ""
    """Redis key postprocess writes the result under; empty means "do not cache"."""
    source_width: int = 0
    source_height: int = 0
    """Size of the original image (set by preprocess; detection boxes are scaled back to it)."""


class PreprocessTask(msgspec.Struct, tag="preprocess_task", **_STRUCT_OPTIONS):
    """ingest → preprocess: raw input to turn into model tensors."""

    job: Job
    input: InputPayload


class InferTask(msgspec.Struct, tag="infer_task", **_STRUCT_OPTIONS):
    """preprocess → router: tensors exactly as the model declares them (batch dimension first)."""

    job: Job
    inputs: tuple[Tensor, ...]


class PostprocessTask(msgspec.Struct, tag="postprocess_task", **_STRUCT_OPTIONS):
    """router → postprocess: the model's raw outputs for one request."""

    job: Job
    outputs: tuple[Tensor, ...]


# --------------------------------------------------------------------------------------------
# Model catalog (NATS KV bucket ``natriton_models``, written by the router from Triton's metadata)
# --------------------------------------------------------------------------------------------
class ModelInfo(msgspec.Struct, tag="model_info", **_STRUCT_OPTIONS):
    """One model as Triton serves it, plus the ``natriton.*`` parameters from its config.pbtxt."""

    name: str
    versions: tuple[str, ...]
    task: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: dict[str, str] = {}
    preferred_batch_sizes: tuple[int, ...] = ()
    """From ``dynamic_batching.preferred_batch_size``: batch sizes worth sending without waiting for more."""

    @property
    def latest_version(self) -> str:
        """The highest ready version number."""
        return max(self.versions, key=lambda v: (len(v), v)) if self.versions else ""


class CacheEntry(msgspec.Struct, tag="cache_entry", **_STRUCT_OPTIONS):
    """What the result cache stores: the answer and the version that produced it."""

    version: str
    result: Result


class RoutePolicy(msgspec.Struct, tag="route_policy", **_STRUCT_OPTIONS):
    """How the router picks a version for requests that do not name one (NATS KV bucket ``natriton_routes``).

    Without a policy, or with empty ``weights``, the latest ready version answers. ``weights`` splits traffic
    between versions (A/B, canary). ``shadow_version`` receives a copy of ``shadow_fraction`` of the traffic;
    its answers are compared with the primary's and counted, never returned.
    """

    model: str
    weights: dict[str, float] = {}
    shadow_version: str = ""
    shadow_fraction: float = 1.0


# --------------------------------------------------------------------------------------------
# Codecs: build once per process, reuse.
# --------------------------------------------------------------------------------------------
T = TypeVar("T")


class Codec(Generic[T]):
    """A msgpack encoder/decoder pair for one message type (a Struct or a tagged union)."""

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
