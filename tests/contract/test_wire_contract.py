"""The v1 wire contract: tags, field names, encodings, error codes, subjects and headers.

Everything pinned here is seen by producers outside the mesh or by older copies of the services during
a rolling upgrade. A failure means a protocol change: make it deliberately (new tag, new field with a
default, or a ``natriton.v2`` subject), never by accident.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from natriton import headers, messages, subjects
from natriton.errors import ErrorCode
from natriton.handoff import HandoffRef
from natriton.messages import (
    Batch,
    CacheEntry,
    Classification,
    ClassScore,
    Codec,
    Detection,
    Detections,
    Embedding,
    ErrorReply,
    FrameRef,
    FrameTask,
    ImageInput,
    InferRequest,
    InferResponse,
    InferTask,
    InputPayload,
    Job,
    ModelControl,
    ModelControlAnswer,
    ModelControlReply,
    ModelInfo,
    PostprocessTask,
    PreprocessTask,
    RawOutputs,
    Reply,
    Result,
    RoutePolicy,
    SourceState,
    StreamControl,
    StreamControlAnswer,
    StreamControlReply,
    StreamInfo,
    StreamMode,
    StreamSource,
    StreamStatus,
    Tensor,
    TensorInput,
    TensorSpec,
    TextInput,
    VersionState,
)
from natriton.profiles import (
    ClassifierProfile,
    ColorOrder,
    DetectorProfile,
    EmbedderProfile,
    ImageSpec,
    ModelProfile,
    RawProfile,
    ResizeMode,
    TextSpec,
    VadProfile,
)
from natriton_client import protocol
from natriton_client.protocol import (
    AudioChunk,
    AudioChunkAck,
    AudioChunkAnswer,
    AudioEvent,
    AudioInput,
    AudioStreamEnded,
    AudioStreamState,
    AudioStreamStateAnswer,
    AudioStreamStateRequest,
    SpeechEnded,
    SpeechSegment,
    SpeechSegments,
    SpeechStarted,
    VoiceActivity,
)

GOLDEN = Path(__file__).parent / "golden"

TENSOR = Tensor(name="IMAGE", datatype="UINT8", shape=(1, 2, 2, 3), data=bytes(range(12)))
LOGITS = Tensor(name="LOGITS", datatype="FP32", shape=(1, 2), data=b"\x00\x00\x80\x3f\x00\x00\x00\x40")
JOB = Job(model="mobilenet_v2", version="1", task="classifier", top_k=3, cache_key="natriton:v1:result:k")
HANDOFF = HandoffRef(domain="8c1f-boot-id:26:1", segment="natriton-RV1DmZ4ViCIk4kKyO7UTeb-3", generation=7, sizes=(12,))
CLASSIFICATION = Classification(
    classes=(ClassScore(index=967, label="espresso", score=0.9), ClassScore(index=1, label="goldfish", score=0.1))
)
IMAGE_SPEC = ImageSpec(input="IMAGE", datatype="UINT8", height=224, width=224, channels_last=True, resize_shorter=256)
TEXT_SPEC = TextSpec(tokenizer_file="minilm_l6_v2/tokenizer.json", tokenizer_sha256="ab" * 32, max_tokens=128)
CLASSIFIER = ClassifierProfile(output="LOGITS", labels=("tench", "goldfish"), image=IMAGE_SPEC)
DETECTOR = DetectorProfile(
    boxes_output="BOXES",
    scores_output="SCORES",
    class_names=("face",),
    score_threshold=0.6,
    nms_iou=0.4,
    image=ImageSpec(
        input="IMAGE",
        datatype="UINT8",
        height=300,
        width=300,
        channels_last=True,
        color=ColorOrder.BGR,
        resize=ResizeMode.STRETCH,
    ),
)
EMBEDDER = EmbedderProfile(output="EMBEDDING", text=TEXT_SPEC)
VAD = VadProfile(state_shape=(2, 128), sample_rate=16000, chunk_samples=512, context_samples=64)
MODEL_INFO = ModelInfo(
    name="mobilenet_v2",
    versions=("1", "2"),
    task="classifier",
    max_batch_size=32,
    inputs=(TensorSpec(name="IMAGE", datatype="UINT8", shape=(224, 224, 3)),),
    outputs=(TensorSpec(name="LOGITS", datatype="FP32", shape=(1000,)),),
    parameters={"natriton.kind": "classifier", "natriton.resize_shorter": "256"},
    preferred_batch_sizes=(8,),
    profile=CLASSIFIER,
    cache_ttl_s=60,
)
BROKEN_MODEL_INFO = ModelInfo(
    name="broken",
    versions=("1",),
    task="invalid",
    max_batch_size=0,
    inputs=(),
    outputs=(),
    parameters={"natriton.colour": "RGB"},
    problem="model 'broken' (classifier): invalid parameters: Object contains unknown field `colour`",
)

# (message, the type it is decoded as, its expected "type" tag or None for untagged nested structs)
EXAMPLES: list[tuple[Any, Any, str | None]] = [
    (TENSOR, Tensor, None),
    (TensorSpec(name="x", datatype="FP32", shape=(-1, 3)), TensorSpec, None),
    (ImageInput(data=b"\xff\xd8jpeg"), ImageInput, "image"),
    (TensorInput(tensors=(TENSOR,)), TensorInput, "tensors"),
    (InferRequest(model="m", input=ImageInput(data=b"png")), InferRequest, "infer_request"),
    (
        InferRequest(model="m", input=TensorInput(tensors=(TENSOR,)), version="2", top_k=1, use_cache=False),
        InferRequest,
        "infer_request",
    ),
    (ClassScore(index=3, label="tiger shark", score=0.5), ClassScore, None),
    (CLASSIFICATION, Classification, "classification"),
    (RawOutputs(tensors=(LOGITS,)), RawOutputs, "raw_outputs"),
    (InferResponse(request_id="r1", model="m", version="1", result=CLASSIFICATION), InferResponse, "infer_response"),
    (
        InferResponse(request_id="r2", model="m", version="1", result=RawOutputs(tensors=(LOGITS,)), cached=True),
        InferResponse,
        "infer_response",
    ),
    (ErrorReply(request_id="r3", code=ErrorCode.NOT_FOUND, message="no such model"), ErrorReply, "error"),
    (
        ErrorReply(request_id="r4", code=ErrorCode.OVERLOADED, message="busy", retry_after_ms=100),
        ErrorReply,
        "error",
    ),
    (JOB, Job, None),
    (PreprocessTask(job=JOB, input=ImageInput(data=b"jpeg")), PreprocessTask, "preprocess_task"),
    (PreprocessTask(job=JOB, input=TensorInput(tensors=(TENSOR,))), PreprocessTask, "preprocess_task"),
    (InferTask(job=JOB, inputs=(TENSOR,)), InferTask, "infer_task"),
    (HANDOFF, HandoffRef, None),
    (
        InferTask(job=JOB, inputs=(msgspec.structs.replace(TENSOR, data=b""),), handoff=HANDOFF),
        InferTask,
        "infer_task",
    ),
    (PostprocessTask(job=JOB, outputs=(LOGITS,)), PostprocessTask, "postprocess_task"),
    (MODEL_INFO, ModelInfo, "model_info"),
    # the public unions, decoded without knowing the concrete type
    (ImageInput(data=b"x"), InputPayload, "image"),
    (TensorInput(tensors=()), InputPayload, "tensors"),
    (CLASSIFICATION, Result, "classification"),
    (RawOutputs(tensors=()), Result, "raw_outputs"),
    (TextInput(text="A man is eating food."), InputPayload, "text"),
    (
        Detections(
            detections=(Detection(label="face", score=0.99, box=(179.0, 57.0, 271.0, 177.0)),),
            image_width=512,
            image_height=512,
        ),
        Result,
        "detections",
    ),
    (Embedding(vector=TENSOR), Result, "embedding"),
    (AudioInput(data=b"RIFF....WAVE"), InputPayload, "audio"),
    (AudioInput(pcm=TENSOR, sample_rate=16_000), InputPayload, "audio"),
    (
        SpeechSegments(segments=(SpeechSegment(start_s=0.29, end_s=1.21, confidence=0.99),), duration_s=1.5),
        Result,
        "speech_segments",
    ),
    (SpeechSegment(start_s=0.0, end_s=0.5, confidence=0.7), SpeechSegment, None),
    (PreprocessTask(job=JOB, input=AudioInput(data=b"fLaC")), PreprocessTask, "preprocess_task"),
    # live audio streams
    (AudioChunk(seq=3, audio=AudioInput(pcm=TENSOR, sample_rate=48_000), end=True), AudioChunk, "audio_chunk"),
    (AudioChunkAck(stream="mic-1", seq=3), AudioChunkAnswer, "audio_chunk_ack"),
    (ErrorReply(request_id="", code=ErrorCode.INVALID_ARGUMENT, message="bad"), AudioChunkAnswer, "error"),
    (
        VoiceActivity(stream="mic-1", seq=3, start_s=0.096, chunk_s=0.032, probabilities=(0.01, 0.97)),
        AudioEvent,
        "voice_activity",
    ),
    (SpeechStarted(stream="mic-1", time_s=0.29, confidence=0.97), AudioEvent, "speech_start"),
    (SpeechEnded(stream="mic-1", time_s=1.21, confidence=0.99), AudioEvent, "speech_end"),
    (AudioStreamEnded(stream="mic-1", reason="quiet", time_s=1.5), AudioEvent, "audio_stream_ended"),
    (
        AudioStreamState(stream="mic-1", owner="c0ffee", next_seq=4, time_s=0.4, speaking=True),
        AudioStreamStateAnswer,
        "audio_stream_state",
    ),
    (AudioStreamStateRequest(), AudioStreamStateRequest, "audio_stream_state_request"),
    (Detection(label="face", score=0.5, box=(0.0, 0.0, 1.0, 1.0)), Detection, None),
    (CacheEntry(version="1", result=CLASSIFICATION), CacheEntry, "cache_entry"),
    (RoutePolicy(model="m", weights={"1": 90.0, "2": 10.0}, shadow_version="2"), RoutePolicy, "route_policy"),
    (InferResponse(request_id="r", model="m", version="1", result=CLASSIFICATION), Reply, "infer_response"),
    (ErrorReply(request_id="r", code=ErrorCode.INTERNAL, message="boom"), Reply, "error"),
    (Batch(items=(CLASSIFICATION, RawOutputs(tensors=(LOGITS,)))), Result, "batch"),
    # the model catalog (JSON values of the KV bucket natriton_models): the typed profiles
    (BROKEN_MODEL_INFO, ModelInfo, "model_info"),
    # model control (operators ↔ router on natriton.v1.control.models)
    (ModelControl(action="load", model="noop"), ModelControl, "model_control"),
    (VersionState(version="1", state="READY"), VersionState, None),
    (
        ModelControlReply(
            action="load",
            model="noop",
            message="noop loaded: versions 1 ready",
            ready_versions=("1",),
            states=(VersionState(version="1", state="READY"), VersionState(version="2", state="UNAVAILABLE")),
        ),
        ModelControlAnswer,
        "model_control_reply",
    ),
    (ErrorReply(request_id="", code=ErrorCode.NOT_FOUND, message="no model"), ModelControlAnswer, "error"),
    # cameras (JSON values of the KV buckets natriton_streams and natriton_stream_status)
    (
        StreamSource(camera="lobby", url="rtsp://cam/lobby", fps=5.0, mode=StreamMode.RELIABLE, change_gate=False),
        StreamSource,
        "stream_source",
    ),
    (
        StreamStatus(camera="lobby", state=SourceState.LOST, owner="i-1", updated_ms=1, reconnects=2, last_error="x"),
        StreamStatus,
        "stream_status",
    ),
    # camera frames (owner → preprocess through a JetStream frames stream)
    (FrameRef(key="natriton:v1:frame:m-1", width=720, height=528, encoding="jpeg", size=40_000), FrameRef, None),
    (
        FrameTask(
            job=Job(model="face_detector", version="", task="detector"),
            frame=FrameRef(key="natriton:v1:frame:m-1", width=720, height=528),
            camera="lobby",
            frame_number=7,
        ),
        FrameTask,
        "frame_task",
    ),
    # camera control (operators ↔ ingest on natriton.v1.control.streams)
    (StreamControl(action="add", source=StreamSource(camera="c", url="/v.mp4")), StreamControl, "stream_control"),
    (StreamControl(action="remove", camera="c"), StreamControl, "stream_control"),
    (StreamInfo(source=StreamSource(camera="c", url="/v.mp4")), StreamInfo, None),
    (
        StreamControlReply(
            action="list",
            message="1 cameras",
            streams=(
                StreamInfo(
                    source=StreamSource(camera="c", url="/v.mp4"),
                    status=StreamStatus(camera="c", state=SourceState.LIVE, owner="i-1"),
                ),
            ),
        ),
        StreamControlAnswer,
        "stream_control_reply",
    ),
    (ErrorReply(request_id="", code=ErrorCode.NOT_FOUND, message="no camera"), StreamControlAnswer, "error"),
    (IMAGE_SPEC, ImageSpec, None),
    (TEXT_SPEC, TextSpec, None),
    (CLASSIFIER, ModelProfile, "classifier"),
    (ClassifierProfile(output="PROBS", softmax=False), ModelProfile, "classifier"),
    (DETECTOR, ModelProfile, "detector"),
    (DetectorProfile(boxes_output="BOXES", scores_output="SCORES"), ModelProfile, "detector"),
    (EMBEDDER, ModelProfile, "embedder"),
    (EmbedderProfile(output="EMBEDDING"), ModelProfile, "embedder"),
    (VAD, ModelProfile, "vad"),
    (RawProfile(), ModelProfile, "raw"),
    (CLASSIFIER, ClassifierProfile, "classifier"),
    (DETECTOR, DetectorProfile, "detector"),
    (EMBEDDER, EmbedderProfile, "embedder"),
    (VAD, VadProfile, "vad"),
    (RawProfile(), RawProfile, "raw"),
]
IDS = [f"{type(m).__name__}-as-{getattr(t, '__name__', 'union')}-{i}" for i, (m, t, _) in enumerate(EXAMPLES)]

ALL_TAGS = {
    "model_control",
    "model_control_reply",
    "batch",
    "classifier",
    "detector",
    "embedder",
    "vad",
    "audio",
    "speech_segments",
    "audio_chunk",
    "audio_chunk_ack",
    "voice_activity",
    "speech_start",
    "speech_end",
    "audio_stream_ended",
    "audio_stream_state",
    "audio_stream_state_request",
    "raw",
    "text",
    "detections",
    "embedding",
    "cache_entry",
    "route_policy",
    "infer_request",
    "image",
    "tensors",
    "classification",
    "raw_outputs",
    "infer_response",
    "error",
    "preprocess_task",
    "infer_task",
    "postprocess_task",
    "model_info",
    "stream_source",
    "stream_status",
    "stream_control",
    "stream_control_reply",
    "frame_task",
}


def _reachable_structs(info: msgspec.inspect.Type, found: set[type[msgspec.Struct]]) -> None:
    """Every Struct a value of this type may contain (fields, unions, collections), recursively."""
    if isinstance(info, msgspec.inspect.StructType):
        if info.cls in found:
            return
        found.add(info.cls)
        children: list[msgspec.inspect.Type] = [f.type for f in info.fields]
    elif isinstance(info, msgspec.inspect.UnionType):
        children = list(info.types)
    elif isinstance(info, msgspec.inspect.VarTupleType | msgspec.inspect.ListType | msgspec.inspect.SetType):
        children = [info.item_type]
    elif isinstance(info, msgspec.inspect.TupleType):
        children = list(info.item_types)
    elif isinstance(info, msgspec.inspect.DictType):
        children = [info.key_type, info.value_type]
    else:
        children = []
    for child in children:
        _reachable_structs(child, found)


def _struct_types() -> list[type[msgspec.Struct]]:
    """The message types of :mod:`natriton.messages` and every Struct that travels inside them (the profiles)."""
    roots = [
        obj
        for _, obj in inspect.getmembers(messages, inspect.isclass)
        if issubclass(obj, msgspec.Struct)
        and obj.__module__ in (messages.__name__, protocol.__name__)
        and not obj.__name__.startswith("_")
    ]
    found: set[type[msgspec.Struct]] = set()
    for info in msgspec.inspect.multi_type_info(roots):
        _reachable_structs(info, found)
    return sorted((cls for cls in found if not cls.__name__.startswith("_")), key=lambda cls: cls.__name__)


# ------------------------------------------------------------------------------------------------
# round trips and tags
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("json_form", [False, True], ids=["msgpack", "json"])
@pytest.mark.parametrize(("message", "as_type", "tag"), EXAMPLES, ids=IDS)
def test_round_trip(message: Any, as_type: Any, tag: str | None, json_form: bool) -> None:
    codec: Codec[Any] = Codec(as_type)
    encoded = codec.encode(message, json=json_form)
    decoded = codec.decode(encoded, json=json_form)
    assert decoded == message
    assert type(decoded) is type(message)
    plain = json.loads(encoded) if json_form else msgspec.msgpack.decode(encoded)
    if tag is None:
        assert "type" not in plain
    else:
        assert plain["type"] == tag


def test_every_message_type_has_the_pinned_tag() -> None:
    tags = {cls.__struct_config__.tag: cls.__name__ for cls in _struct_types() if cls.__struct_config__.tag is not None}
    assert set(tags) == ALL_TAGS, "a message type was added or its tag changed: pin it here and in docs"
    assert all(cls.__struct_config__.tag_field == "type" for cls in _struct_types() if cls.__struct_config__.tag)
    assert {ex[0].__class__.__name__ for ex in EXAMPLES} == {cls.__name__ for cls in _struct_types()}


def test_every_message_is_frozen_and_keyword_only() -> None:
    for cls in _struct_types():
        assert cls.__struct_config__.frozen, cls.__name__
        params = inspect.signature(cls).parameters.values()
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params), cls.__name__


# Field order is part of msgpack-as-array encoders' view and of the docs; new fields are appended only.
PINNED_FIELDS = {
    "Tensor": ("name", "datatype", "shape", "data"),
    "TensorSpec": ("name", "datatype", "shape"),
    "ImageInput": ("data",),
    "TensorInput": ("tensors",),
    "InferRequest": ("model", "input", "version", "top_k", "use_cache"),
    "ClassScore": ("index", "label", "score"),
    "Classification": ("classes",),
    "RawOutputs": ("tensors",),
    "InferResponse": ("request_id", "model", "version", "result", "cached"),
    "ErrorReply": ("request_id", "code", "message", "retry_after_ms"),
    "Job": ("model", "version", "task", "top_k", "cache_key"),
    "PreprocessTask": ("job", "input"),
    "InferTask": ("job", "inputs", "handoff"),
    "HandoffRef": ("domain", "segment", "generation", "sizes"),
    "PostprocessTask": ("job", "outputs"),
    "ModelInfo": (
        "name",
        "versions",
        "task",
        "max_batch_size",
        "inputs",
        "outputs",
        "parameters",
        "preferred_batch_sizes",
        "profile",
        "cache_ttl_s",
        "problem",
    ),
    "TextInput": ("text",),
    "AudioInput": ("data", "pcm", "sample_rate"),
    "SpeechSegment": ("start_s", "end_s", "confidence"),
    "SpeechSegments": ("segments", "duration_s"),
    "AudioChunk": ("seq", "audio", "model", "end"),
    "AudioChunkAck": ("stream", "seq"),
    "VoiceActivity": ("stream", "seq", "start_s", "chunk_s", "probabilities"),
    "SpeechStarted": ("stream", "time_s", "confidence"),
    "SpeechEnded": ("stream", "time_s", "confidence"),
    "AudioStreamEnded": ("stream", "reason", "time_s"),
    "AudioStreamState": ("stream", "owner", "next_seq", "time_s", "speaking", "waiting"),
    "AudioStreamStateRequest": (),
    "Batch": ("items",),
    "Detection": ("label", "score", "box"),
    "Detections": ("detections", "image_width", "image_height"),
    "Embedding": ("vector",),
    "CacheEntry": ("version", "result"),
    "RoutePolicy": ("model", "weights", "shadow_version", "shadow_fraction"),
    "ModelControl": ("action", "model"),
    "ModelControlReply": ("action", "model", "message", "ready_versions", "states"),
    "VersionState": ("version", "state", "reason"),
    "FrameRef": ("key", "width", "height", "encoding", "size"),
    "FrameTask": ("job", "frame", "camera", "frame_number"),
    "StreamControl": ("action", "source", "camera"),
    "StreamInfo": ("source", "status"),
    "StreamControlReply": ("action", "message", "streams"),
    "StreamSource": ("camera", "url", "model", "fps", "mode", "change_gate", "loop"),
    "StreamStatus": (
        "camera",
        "state",
        "owner",
        "updated_ms",
        "frames_read",
        "frames_emitted",
        "reconnects",
        "last_error",
        "page",
    ),
    "ImageSpec": ("input", "datatype", "height", "width", "channels_last", "color", "resize", "resize_shorter"),
    "TextSpec": ("tokenizer_file", "tokenizer_sha256", "max_tokens", "ids_input", "mask_input"),
    "ClassifierProfile": ("output", "labels", "softmax", "image"),
    "DetectorProfile": ("boxes_output", "scores_output", "class_names", "score_threshold", "nms_iou", "image"),
    "EmbedderProfile": ("output", "text"),
    "VadProfile": (
        "state_shape",
        "sample_rate",
        "chunk_samples",
        "audio_input",
        "state_input",
        "probability_output",
        "state_output",
        "context_samples",
        "threshold",
        "neg_threshold",
        "min_speech_duration_ms",
        "min_silence_duration_ms",
        "speech_pad_ms",
    ),
    "RawProfile": (),
}


@pytest.mark.parametrize("cls", _struct_types(), ids=lambda c: c.__name__)
def test_fields_are_only_ever_appended_with_defaults(cls: type[msgspec.Struct]) -> None:
    pinned = PINNED_FIELDS[cls.__name__]
    fields = msgspec.structs.fields(cls)
    names = tuple(f.name for f in fields)
    assert names[: len(pinned)] == pinned, f"{cls.__name__} fields were renamed, removed or reordered"
    for added in fields[len(pinned) :]:
        assert added.required is False, f"new field {cls.__name__}.{added.name} needs a default"


def test_defaults_of_the_public_request() -> None:
    minimal = b'{"type": "infer_request", "model": "m", "input": {"type": "image", "data": ""}}'
    request = Codec(InferRequest).decode(minimal, json=True)
    assert request == InferRequest(model="m", input=ImageInput(data=b""), version="", top_k=5, use_cache=True)


def test_bytes_are_raw_in_msgpack_and_base64_in_json() -> None:
    codec: Codec[ImageInput] = Codec(ImageInput)
    msg = ImageInput(data=b"\xff\xd8\xff\xe0\x00\x10JFIF")
    assert msgspec.msgpack.decode(codec.encode(msg))["data"] == msg.data
    assert json.loads(codec.encode(msg, json=True))["data"] == "/9j/4AAQSkZJRg=="


# ------------------------------------------------------------------------------------------------
# forward compatibility
# ------------------------------------------------------------------------------------------------
def _add_unknown_fields(value: Any) -> Any:
    """Add a field a newer writer might send to every struct (``parameters``/``weights`` are maps, not structs)."""
    if isinstance(value, dict):
        fields = {k: v if k in ("parameters", "weights") else _add_unknown_fields(v) for k, v in value.items()}
        return {**fields, "added_in_v1_9": {"nested": [1, 2]}}
    if isinstance(value, list):
        return [_add_unknown_fields(v) for v in value]
    return value


@pytest.mark.parametrize("json_form", [False, True], ids=["msgpack", "json"])
@pytest.mark.parametrize(("message", "as_type", "tag"), EXAMPLES, ids=IDS)
def test_unknown_fields_are_ignored(message: Any, as_type: Any, tag: str | None, json_form: bool) -> None:
    codec: Codec[Any] = Codec(as_type)
    if json_form:
        newer = json.dumps(_add_unknown_fields(json.loads(codec.encode(message, json=True)))).encode()
    else:
        newer = msgspec.msgpack.encode(_add_unknown_fields(msgspec.msgpack.decode(codec.encode(message))))
    assert codec.decode(newer, json=json_form) == message


@pytest.mark.parametrize("json_form", [False, True], ids=["msgpack", "json"])
def test_unknown_tag_is_rejected(json_form: bool) -> None:
    codec: Codec[Reply] = Codec(Reply)
    body = {"type": "infer_response_v2", "request_id": "r", "model": "m", "version": "1"}
    data = json.dumps(body).encode() if json_form else msgspec.msgpack.encode(body)
    with pytest.raises(msgspec.ValidationError):
        codec.decode(data, json=json_form)


def test_unknown_error_code_is_rejected() -> None:
    body = {"type": "error", "request_id": "r", "code": "teapot", "message": "?"}
    with pytest.raises(msgspec.ValidationError):
        Codec(Reply).decode(json.dumps(body).encode(), json=True)


# ------------------------------------------------------------------------------------------------
# the model catalog as operators see it (``nats kv get natriton_models mobilenet_v2``)
# ------------------------------------------------------------------------------------------------
def test_catalog_entry_json_form() -> None:
    entry = json.loads(Codec(ModelInfo).encode(MODEL_INFO, json=True))
    assert entry["type"] == "model_info"
    assert entry["task"] == "classifier"
    assert entry["cache_ttl_s"] == 60
    assert entry["problem"] == ""
    assert entry["profile"] == {
        "type": "classifier",
        "output": "LOGITS",
        "labels": ["tench", "goldfish"],
        "softmax": True,
        "image": {
            "input": "IMAGE",
            "datatype": "UINT8",
            "height": 224,
            "width": 224,
            "channels_last": True,
            "color": "RGB",
            "resize": "shorter_side_crop",
            "resize_shorter": 256,
        },
    }


def test_profile_enum_values_are_pinned() -> None:
    assert {c.value for c in ColorOrder} == {"RGB", "BGR"}
    assert {r.value for r in ResizeMode} == {"shorter_side_crop", "stretch"}
    detector = json.loads(Codec(ModelProfile).encode(DETECTOR, json=True))
    assert (detector["image"]["color"], detector["image"]["resize"]) == ("BGR", "stretch")


def test_catalog_entry_from_before_profiles_decodes_as_raw() -> None:
    old = {
        "type": "model_info",
        "name": "m",
        "versions": ["1"],
        "task": "image_classification",
        "max_batch_size": 8,
        "inputs": [],
        "outputs": [],
        "parameters": {"natriton.task": "image_classification"},
    }
    info = Codec(ModelInfo).decode(json.dumps(old).encode(), json=True)
    assert (info.profile, info.cache_ttl_s, info.problem) == (RawProfile(), None, "")


@pytest.mark.parametrize("json_form", [False, True], ids=["msgpack", "json"])
def test_unknown_profile_kind_is_rejected(json_form: bool) -> None:
    body = {"type": "segmenter", "output": "MASK"}
    data = json.dumps(body).encode() if json_form else msgspec.msgpack.encode(body)
    with pytest.raises(msgspec.ValidationError):
        Codec(ModelProfile).decode(data, json=json_form)


# ------------------------------------------------------------------------------------------------
# golden files: the documented JSON form of the public messages
# ------------------------------------------------------------------------------------------------
GOLDEN_CASES: list[tuple[str, Any, Any]] = [
    (
        "v1_infer_request.json",
        InferRequest,
        InferRequest(
            model="mobilenet_v2",
            input=ImageInput(data=b"\xff\xd8\xff\xe0\x00\x10JFIF"),
            version="1",
            top_k=3,
            use_cache=False,
        ),
    ),
    (
        "v1_infer_response.json",
        Reply,
        InferResponse(
            request_id="req-0001",
            model="mobilenet_v2",
            version="1",
            result=Classification(
                classes=(
                    ClassScore(index=967, label="espresso", score=0.875),
                    ClassScore(index=968, label="tea cup", score=0.0625),
                )
            ),
            cached=True,
        ),
    ),
    (
        "v1_error_reply.json",
        Reply,
        ErrorReply(
            request_id="req-0002",
            code=ErrorCode.OVERLOADED,
            message="too many requests in flight",
            retry_after_ms=250,
        ),
    ),
]


@pytest.mark.parametrize(("filename", "as_type", "expected"), GOLDEN_CASES, ids=[c[0] for c in GOLDEN_CASES])
def test_golden_file_decodes_to_the_expected_message(filename: str, as_type: Any, expected: Any) -> None:
    golden = (GOLDEN / filename).read_bytes()
    codec: Codec[Any] = Codec(as_type)
    assert codec.decode(golden, json=True) == expected
    # and today's encoder writes exactly the documented fields and values
    assert json.loads(codec.encode(expected, json=True)) == json.loads(golden)
    # the msgpack form carries the same document
    assert codec.decode(codec.encode(expected)) == expected


# ------------------------------------------------------------------------------------------------
# error codes, subjects, headers
# ------------------------------------------------------------------------------------------------
def test_error_codes_and_status_numbers_are_pinned() -> None:
    assert {code.value: code.status for code in ErrorCode} == {
        "invalid_argument": 400,
        "not_found": 404,
        "payload_too_large": 413,
        "overloaded": 429,
        "internal": 500,
        "unavailable": 503,
        "deadline_exceeded": 504,
    }


def test_retryable_error_codes() -> None:
    assert {code for code in ErrorCode if code.retryable} == {
        ErrorCode.DEADLINE_EXCEEDED,
        ErrorCode.OVERLOADED,
        ErrorCode.UNAVAILABLE,
    }


def test_error_code_is_a_plain_string_on_the_wire() -> None:
    reply = ErrorReply(request_id="r", code=ErrorCode.PAYLOAD_TOO_LARGE, message="big")
    assert msgspec.msgpack.decode(Codec(ErrorReply).encode(reply))["code"] == "payload_too_large"
    assert ErrorCode("payload_too_large") is ErrorCode.PAYLOAD_TOO_LARGE


def test_public_subjects_are_pinned() -> None:
    assert subjects.INFER == "natriton.v1.infer"
    assert subjects.results_subject("mobilenet_v2") == "natriton.v1.results.mobilenet_v2"
    assert subjects.replies_subject("abc") == "natriton.v1.internal.replies.abc"
    assert subjects.PREPROCESS == "natriton.v1.internal.preprocess"
    assert subjects.ROUTE == "natriton.v1.internal.route"
    assert subjects.POSTPROCESS == "natriton.v1.internal.postprocess"
    assert subjects.MODELS_BUCKET == "natriton_models"
    assert subjects.MODEL_FILES_BUCKET == "natriton_model_files"
    assert subjects.ROUTES_BUCKET == "natriton_routes"
    assert subjects.CONTROL_MODELS == "natriton.v1.control.models"
    assert subjects.RESULTS_PREFIX == "natriton.v1.results"
    assert subjects.queue_group("router") == "natriton.router"


def test_internal_headers_are_pinned() -> None:
    # read by older copies of the services during a rolling upgrade
    assert headers.MESH_ID == "Natriton-Mesh-Id"
    assert headers.REPLY_TO == "Natriton-Reply-To"


def test_public_headers_are_pinned() -> None:
    assert headers.REQUEST_ID == "Natriton-Request-Id"
    assert headers.TIMEOUT_MS == "Natriton-Timeout-Ms"
    assert headers.DEADLINE == "Natriton-Deadline"
    assert headers.CONTENT_TYPE == "Content-Type"
    assert headers.RESULTS_TO == "Natriton-Results-To"
    assert protocol.SHARED_RESULTS == "shared"
    assert protocol.MAX_REQUEST_ID_LENGTH == 128
    assert headers.CACHE == "Natriton-Cache"
    assert headers.SERVICE_ERROR == "Nats-Service-Error"
    assert headers.SERVICE_ERROR_CODE == "Nats-Service-Error-Code"
    assert headers.TRACEPARENT == "traceparent"
    assert (headers.JSON, headers.MSGPACK) == ("application/json", "application/msgpack")
