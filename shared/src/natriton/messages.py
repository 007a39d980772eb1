"""The wire contract, version 1: the public messages (from :mod:`natriton_client.protocol`) and the internal ones.

The public protocol (what producers send and receive) is defined once, in the slim ``natriton-client``
package, and re-exported here. Everything defined in this module flows between the four services only
(or lives in the mesh's NATS KV buckets). The rules of :mod:`natriton_client.protocol` apply to it too.
"""

from __future__ import annotations

import enum
from typing import Any, Final, Literal, TypeAlias

import msgspec

from natriton.handoff import HandoffRef
from natriton.profiles import ModelProfile, RawProfile, TensorSpec
from natriton_client.protocol import (
    AudioChunk,
    AudioChunkAck,
    AudioEvent,
    AudioInput,
    AudioStreamEnded,
    AudioStreamState,
    AudioStreamStateRequest,
    Batch,
    Classification,
    ClassScore,
    Codec,
    Detection,
    Detections,
    Embedding,
    ErrorReply,
    ImageInput,
    InferRequest,
    InferResponse,
    InputPayload,
    ItemResult,
    PublicRequest,
    RawOutputs,
    Reply,
    Result,
    SpeechEnded,
    SpeechSegment,
    SpeechSegments,
    SpeechStarted,
    Tensor,
    TensorInput,
    TextInput,
    VoiceActivity,
)

__all__ = [
    "AudioChunk",
    "AudioChunkAck",
    "AudioEvent",
    "AudioInput",
    "AudioStreamEnded",
    "AudioStreamState",
    "AudioStreamStateRequest",
    "Batch",
    "CacheEntry",
    "ClassScore",
    "Classification",
    "Codec",
    "Detection",
    "Detections",
    "Embedding",
    "ErrorReply",
    "FrameRef",
    "FrameTask",
    "ImageInput",
    "InferRequest",
    "InferResponse",
    "InferTask",
    "InputPayload",
    "ItemResult",
    "Job",
    "ModelControl",
    "ModelControlAnswer",
    "ModelControlReply",
    "ModelInfo",
    "PostprocessTask",
    "PreprocessTask",
    "PublicRequest",
    "RawOutputs",
    "Reply",
    "Result",
    "RoutePolicy",
    "SourceState",
    "SpeechEnded",
    "SpeechSegment",
    "SpeechSegments",
    "SpeechStarted",
    "StreamControl",
    "StreamControlAnswer",
    "StreamControlReply",
    "StreamInfo",
    "StreamMode",
    "StreamSource",
    "StreamStatus",
    "Tensor",
    "TensorInput",
    "TensorSpec",
    "TextInput",
    "VersionState",
    "VoiceActivity",
]

_STRUCT_OPTIONS: Final[dict[str, Any]] = {"frozen": True, "kw_only": True, "tag_field": "type"}


# --------------------------------------------------------------------------------------------
# Internal: between services
# --------------------------------------------------------------------------------------------
class Job(msgspec.Struct, frozen=True, kw_only=True):
    """What every hop needs to know about the request it is working on."""

    model: str
    version: str
    task: str
    """The model's kind (informational; services read the profile from the catalog)."""
    top_k: int = 5
    cache_key: str = ""
    """Redis key postprocess writes the result under; empty means "do not cache"."""
    source_width: int = 0
    source_height: int = 0
    """Size of the original image (set by preprocess; detection boxes are scaled back to it)."""
    audio_samples: int = 0
    """Length of the audio at the model's sample rate (set by preprocess; speech segments end within it)."""
    sequence: str = ""
    """The live audio stream a run of chunks belongs to (set by its owner): its answer is the model's raw outputs
    (the probabilities and the next state), not speech segments."""
    router_answers: bool = False
    """The router makes the answer and sends it to the owner itself, without the postprocess hop (set by ingest
    for models whose answer is cheap to make; decision 0012). False: the router hands the outputs to postprocess."""


class PreprocessTask(msgspec.Struct, tag="preprocess_task", **_STRUCT_OPTIONS):
    """ingest → preprocess: raw input to turn into model tensors."""

    job: Job
    input: InputPayload


class FrameRef(msgspec.Struct, frozen=True, kw_only=True):
    """Where a frame's pixels are (a claim check: the pixels are stored once, hops carry this reference)."""

    key: str
    """The key in the frame store (:mod:`natriton.claimcheck`)."""
    width: int
    height: int
    encoding: Literal["rgb24", "jpeg", "image"] = "rgb24"
    """``rgb24``: height x width x 3 bytes, row-major; ``jpeg``: a JPEG file; ``image``: a producer's encoded image
    (any format preprocess decodes; width and height 0 until decoded)."""
    size: int = 0
    """Bytes stored."""


class FrameTask(msgspec.Struct, tag="frame_task", **_STRUCT_OPTIONS):
    """ingest (a camera's owner) → preprocess, through a JetStream frames stream: one frame to analyse."""

    job: Job
    frame: FrameRef
    camera: str
    frame_number: int


class InferTask(msgspec.Struct, tag="infer_task", **_STRUCT_OPTIONS):
    """preprocess (or ingest, for ready-made tensors) → router: tensors exactly as the model declares them (batch
    dimension first)."""

    job: Job
    inputs: tuple[Tensor, ...]
    handoff: HandoffRef | None = None
    """Set when the inputs' bytes wait in the sender's shared memory (:mod:`natriton.handoff`): each input's
    ``data`` is then empty."""


class PostprocessTask(msgspec.Struct, tag="postprocess_task", **_STRUCT_OPTIONS):
    """router → postprocess: the model's raw outputs for one request."""

    job: Job
    outputs: tuple[Tensor, ...]


# --------------------------------------------------------------------------------------------
# Model catalog (NATS KV bucket ``natriton_models``, written by the router from Triton's metadata)
# --------------------------------------------------------------------------------------------
class ModelInfo(msgspec.Struct, tag="model_info", **_STRUCT_OPTIONS):
    """One model as Triton serves it and what it means to the mesh (its typed profile).

    Stored as JSON in the KV bucket ``natriton_models`` (``nats kv get natriton_models mobilenet_v2``).
    """

    name: str
    versions: tuple[str, ...]
    task: str
    """The profile's kind (``classifier``, ``detector``, ``embedder``, ``vad``, ``raw``), for readers of the catalog."""
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: dict[str, str] = {}
    preferred_batch_sizes: tuple[int, ...] = ()
    """From ``dynamic_batching.preferred_batch_size``: batch sizes worth sending without waiting for more."""
    profile: ModelProfile = RawProfile()
    """What the model means: how to feed it and how to read its outputs (decoded once from config.pbtxt)."""
    cache_ttl_s: int | None = None
    """Result-cache lifetime of this model's answers; None = the postprocess default."""
    problem: str = ""
    """Why the model cannot be served (a configuration error found at load time); empty when it can."""

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
# Model control (operators → router, request/reply on ``natriton.v1.control.models``)
# --------------------------------------------------------------------------------------------
class ModelControl(msgspec.Struct, tag="model_control", **_STRUCT_OPTIONS):
    """Load (or reload, picking up new versions) or unload one model in Triton's repository (explicit mode)."""

    action: Literal["load", "unload"]
    model: str


class VersionState(msgspec.Struct, frozen=True, kw_only=True):
    """One version of a model as Triton's repository index reports it."""

    version: str
    state: str
    """Triton's state: ``READY``, ``UNAVAILABLE``, ``LOADING``, ``UNLOADING``."""
    reason: str = ""


class ModelControlReply(msgspec.Struct, tag="model_control_reply", **_STRUCT_OPTIONS):
    """What a model-control action did: the model's versions in Triton and in the catalog afterwards."""

    action: str
    model: str
    message: str
    ready_versions: tuple[str, ...] = ()
    """The versions the catalog lists now (empty: the model is not in the catalog)."""
    states: tuple[VersionState, ...] = ()


ModelControlAnswer: TypeAlias = ModelControlReply | ErrorReply
"""The answer on ``natriton.v1.control.models``: the outcome, or a typed error."""


# --------------------------------------------------------------------------------------------
# Streams (cameras): sources in the KV bucket ``natriton_streams``, their status in ``natriton_stream_status``
# --------------------------------------------------------------------------------------------
class StreamMode(enum.StrEnum):
    """How a camera's frames are delivered under backpressure."""

    REALTIME = "realtime"
    """Only the newest frame waits; older ones are dropped (and counted): latency stays bounded."""
    RELIABLE = "reliable"
    """Every frame is processed exactly once in the results, in order; lag is reported instead."""


class SourceState(enum.StrEnum):
    """Where a source is: being opened, delivering frames, lost (reconnecting with backoff), or at its end."""

    CONNECTING = "connecting"
    LIVE = "live"
    LOST = "lost"
    ENDED = "ended"


class StreamSource(msgspec.Struct, tag="stream_source", **_STRUCT_OPTIONS):
    """A camera to read: a video file, an RTSP/HTTP stream, or a folder of images, and how to analyse it."""

    camera: str
    """The camera's id: 1 to 64 of ``A-Z a-z 0-9 _ -`` (it is a subject token and a KV key)."""
    url: str
    """``rtsp://``, ``http(s)://``, a file path (mp4, avi, mkv) or a directory of images."""
    model: str = "face_detector"
    """The detector that analyses the frames."""
    fps: float = 0.0
    """Frames per second to sample (by timestamps); 0 takes every frame."""
    mode: StreamMode = StreamMode.REALTIME
    change_gate: bool = True
    """Reuse the last detections for frames that did not change beyond the gate's threshold."""
    loop: bool = False
    """Files only: start again at the end (frame numbers keep increasing)."""
    audio_model: str = ""
    """A voice-activity model (``natriton.kind: vad``, e.g. ``silero_vad``) for the source's audio track: its sound
    is sent as the live audio stream named like the camera (``natriton.v1.audio.chunks.<camera>``, events on
    ``natriton.v1.audio.events.<camera>``), exactly as a microphone's would be. '' ignores the sound."""


class StreamStatus(msgspec.Struct, tag="stream_status", **_STRUCT_OPTIONS):
    """What a camera's owner last reported about its source."""

    camera: str
    state: SourceState
    owner: str = ""
    """The instance id of the ingest copy that reads the source."""
    updated_ms: int = 0
    """When this status was written, Unix epoch milliseconds."""
    frames_read: int = 0
    frames_emitted: int = 0
    """Frames kept after sampling to ``fps``."""
    reconnects: int = 0
    last_error: str = ""
    page: str = ""
    """The owner's live page (``<NATRITON_PUBLIC_URL>/streams``): the camera's annotated frames and numbers; '' when
    the owner serves no HTTP."""


class StreamControl(msgspec.Struct, tag="stream_control", **_STRUCT_OPTIONS):
    """Add (or replace) a camera, remove one, or list them (request/reply on ``natriton.v1.control.streams``)."""

    action: Literal["add", "remove", "list"]
    source: StreamSource | None = None
    """``add``: the camera to read."""
    camera: str = ""
    """``remove``: the camera's id."""


class StreamInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A camera and what its owner last reported (no status yet: no ingest copy has taken it)."""

    source: StreamSource
    status: StreamStatus | None = None


class StreamControlReply(msgspec.Struct, tag="stream_control_reply", **_STRUCT_OPTIONS):
    """What a stream-control action did, and the cameras it concerns (all of them for ``list``)."""

    action: str
    message: str
    streams: tuple[StreamInfo, ...] = ()


StreamControlAnswer: TypeAlias = StreamControlReply | ErrorReply
"""The answer on ``natriton.v1.control.streams``: the outcome, or a typed error."""
