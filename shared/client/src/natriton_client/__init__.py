"""Natriton's client: the public wire contract (:mod:`natriton_client.protocol`) and clients for producers.

- :class:`AsyncClient` (asyncio, recommended) and :class:`Client` (blocking): ``infer``, ``infer_many``,
  ``publish`` (fire-and-forget) and ``results`` subscriptions, with typed exceptions and retries;
- :mod:`natriton_client.errors`: :class:`NatritonError` and one subclass per :class:`ErrorCode`;
- :mod:`natriton_client.protocol`: the messages, subjects and headers (only msgspec needed).

The clients (and nats-py) are imported on first use, so ``import natriton_client.protocol`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from natriton_client import errors, protocol
from natriton_client._wire import new_results_subject
from natriton_client.errors import (
    ConnectionFailed,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NatritonError,
    NoReply,
    NoResponders,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    Unavailable,
)
from natriton_client.protocol import (
    INFER_SUBJECT,
    AudioChunk,
    AudioChunkAck,
    AudioInput,
    AudioStreamEnded,
    AudioStreamState,
    Batch,
    Classification,
    ClassScore,
    Detection,
    Detections,
    Embedding,
    ErrorCode,
    ErrorReply,
    Header,
    ImageInput,
    InferRequest,
    InferResponse,
    ItemResult,
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
    audio_chunks_subject,
    audio_events_subject,
    audio_state_subject,
    results_subject,
)
from natriton_client.retry import NO_RETRY, RetryPolicy

if TYPE_CHECKING:
    from natriton_client.aio import AsyncClient, AsyncResults, InferCall, MeshClient
    from natriton_client.sync import Client, Results

__version__ = "0.1.0"

__all__ = [
    "INFER_SUBJECT",
    "NO_RETRY",
    "AsyncClient",
    "AsyncResults",
    "AudioChunk",
    "AudioChunkAck",
    "AudioInput",
    "AudioStreamEnded",
    "AudioStreamState",
    "Batch",
    "ClassScore",
    "Classification",
    "Client",
    "ConnectionFailed",
    "DeadlineExceeded",
    "Detection",
    "Detections",
    "Embedding",
    "ErrorCode",
    "ErrorReply",
    "Header",
    "ImageInput",
    "InferCall",
    "InferRequest",
    "InferResponse",
    "Internal",
    "InvalidArgument",
    "ItemResult",
    "MeshClient",
    "NatritonError",
    "NoReply",
    "NoResponders",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "RawOutputs",
    "Reply",
    "Result",
    "Results",
    "RetryPolicy",
    "SpeechEnded",
    "SpeechSegment",
    "SpeechSegments",
    "SpeechStarted",
    "Tensor",
    "TensorInput",
    "TextInput",
    "Unavailable",
    "VoiceActivity",
    "__version__",
    "audio_chunks_subject",
    "audio_events_subject",
    "audio_state_subject",
    "errors",
    "new_results_subject",
    "protocol",
    "results_subject",
]

_LAZY = {
    "AsyncClient": "natriton_client.aio",
    "AsyncResults": "natriton_client.aio",
    "InferCall": "natriton_client.aio",
    "MeshClient": "natriton_client.aio",
    "Client": "natriton_client.sync",
    "Results": "natriton_client.sync",
}


def __getattr__(name: str) -> Any:
    """Import the clients (and with them nats-py) only when they are first used."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
