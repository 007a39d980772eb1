"""The wire contract, version 1: the public messages (from :mod:`natriton_client.protocol`) and the internal ones.

The public protocol (what producers send and receive) is defined once, in the slim ``natriton-client``
package, and re-exported here. Everything defined in this module flows between the four services only
(or lives in the mesh's NATS KV buckets). The rules of :mod:`natriton_client.protocol` apply to it too.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeAlias

import msgspec

from natriton.profiles import ModelProfile, RawProfile, TensorSpec
from natriton_client.protocol import (
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
    Tensor,
    TensorInput,
    TextInput,
)

__all__ = [
    "Batch",
    "CacheEntry",
    "ClassScore",
    "Classification",
    "Codec",
    "Detection",
    "Detections",
    "Embedding",
    "ErrorReply",
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
    "Tensor",
    "TensorInput",
    "TensorSpec",
    "TextInput",
    "VersionState",
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
    """One model as Triton serves it and what it means to the mesh (its typed profile).

    Stored as JSON in the KV bucket ``natriton_models`` (``nats kv get natriton_models mobilenet_v2``).
    """

    name: str
    versions: tuple[str, ...]
    task: str
    """The profile's kind (``classifier``, ``detector``, ``embedder``, ``raw``), for readers of the catalog."""
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
