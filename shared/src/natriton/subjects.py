"""Subject names and queue groups: the addresses of the mesh (all versioned ``natriton.v1.*``).

The public subjects come from :mod:`natriton_client.protocol`; the internal ones are defined here.
"""

from __future__ import annotations

from typing import Final

from natriton_client.protocol import (
    AUDIO_CHUNKS_PREFIX,
    AUDIO_EVENTS_PREFIX,
    AUDIO_STATE_PREFIX,
    INFER_SUBJECT,
    INGEST_HEARTBEAT_SUBJECT,
    RESULTS_PREFIX,
    SUBJECT_PREFIX,
    audio_events_subject,
    results_subject,
)

__all__ = [
    "AUDIO_CHUNKS_PREFIX",
    "AUDIO_EVENTS_PREFIX",
    "AUDIO_STATE_PREFIX",
    "INFER",
    "RESULTS_PREFIX",
    "audio_events_subject",
    "results_subject",
]

PREFIX: Final = SUBJECT_PREFIX
INFER: Final = INFER_SUBJECT
"""Public request/reply endpoint of ingest (fire-and-forget with ``Natriton-Results-To``)."""

PREPROCESS: Final = f"{PREFIX}.internal.preprocess"
ROUTE: Final = f"{PREFIX}.internal.route"
PREPROCESS_STORED: Final = f"{PREFIX}.internal.preprocess_stored"
"""ingest → preprocess: a large request's image by reference (a :class:`natriton.messages.FrameTask` whose pixels
are in the frame store), so the bytes cross NATS once instead of at every hop."""
POSTPROCESS: Final = f"{PREFIX}.internal.postprocess"
REPLIES_PREFIX: Final = f"{PREFIX}.internal.replies"
"""Each ingest instance listens on ``<prefix>.<instance id>`` for the answers to the requests it accepted."""
CONTROL_MODELS: Final = f"{PREFIX}.control.models"
"""Router request/reply endpoint (every copy, one queue group): load or unload a model in Triton (explicit mode)."""
CONTROL_STREAMS: Final = f"{PREFIX}.control.streams"
"""Ingest request/reply endpoint (every copy, one queue group): add, remove or list cameras."""

AUDIT_PREFIX: Final = f"{PREFIX}.audit"
"""Ingest publishes one audit record per answered request on ``<prefix>.<tenant>`` (``_mesh``: the mesh's own
account), kept by the JetStream stream ``AUDIT_STREAM``."""
AUDIT_STREAM: Final = "NATRITON_AUDIT"

MODELS_BUCKET: Final = "natriton_models"
"""NATS KV bucket with one :class:`natriton.messages.ModelInfo` per model (JSON), written by the router."""

MODEL_FILES_BUCKET: Final = "natriton_model_files"
"""NATS object store with files the services need beside models (tokenizers), named `<model>/<file>`."""

ROUTES_BUCKET: Final = "natriton_routes"
"""NATS KV bucket with one :class:`natriton.messages.RoutePolicy` per model (JSON), changed by operators."""

STREAMS_BUCKET: Final = "natriton_streams"
"""NATS KV bucket with one :class:`natriton.messages.StreamSource` per camera (JSON): the sources to read."""
STREAM_STATUS_BUCKET: Final = "natriton_stream_status"
"""NATS KV bucket with one :class:`natriton.messages.StreamStatus` per camera (JSON), written by its owner."""
STREAM_LEASES_BUCKET: Final = "natriton_stream_leases"
"""NATS KV bucket of camera leases: the ingest copy whose key it is reads that camera. Entries expire with the
bucket's TTL unless their owner renews them, so another copy takes over a camera whose owner died."""


def replies_subject(instance_id: str) -> str:
    """The private reply subject of one ingest instance."""
    return f"{REPLIES_PREFIX}.{instance_id}"


HEARTBEATS_PREFIX: Final = f"{PREFIX}.internal.heartbeat"
"""Every copy of preprocess, router and postprocess says it is alive on ``<prefix>.<service>``; ingest watches them
to re-send what a dead copy held (ingest's own heartbeats are public: ``INGEST_HEARTBEAT_SUBJECT``)."""
STAGE_HEARTBEATS: Final = f"{HEARTBEATS_PREFIX}.*"


def heartbeat_subject(service: str) -> str:
    """Where the copies of ``service`` publish their heartbeats."""
    return INGEST_HEARTBEAT_SUBJECT if service == "ingest" else f"{HEARTBEATS_PREFIX}.{service}"


def queue_group(service: str) -> str:
    """The queue group every copy of ``service`` joins, so each message goes to exactly one copy."""
    return f"natriton.{service}"
