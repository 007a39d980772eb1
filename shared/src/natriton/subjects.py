"""Subject names and queue groups: the addresses of the mesh (all versioned ``natriton.v1.*``).

The public subjects come from :mod:`natriton_client.protocol`; the internal ones are defined here.
"""

from __future__ import annotations

from typing import Final

from natriton_client.protocol import INFER_SUBJECT, RESULTS_PREFIX, SUBJECT_PREFIX, results_subject

__all__ = ["INFER", "RESULTS_PREFIX", "results_subject"]

PREFIX: Final = SUBJECT_PREFIX
INFER: Final = INFER_SUBJECT
"""Public request/reply endpoint of ingest (fire-and-forget with ``Natriton-Results-To``)."""

PREPROCESS: Final = f"{PREFIX}.internal.preprocess"
ROUTE: Final = f"{PREFIX}.internal.route"
POSTPROCESS: Final = f"{PREFIX}.internal.postprocess"
REPLIES_PREFIX: Final = f"{PREFIX}.internal.replies"
"""Each ingest instance listens on ``<prefix>.<instance id>`` for the answers to the requests it accepted."""
CONTROL_MODELS: Final = f"{PREFIX}.control.models"
"""Router request/reply endpoint (every copy, one queue group): load or unload a model in Triton (explicit mode)."""

MODELS_BUCKET: Final = "natriton_models"
"""NATS KV bucket with one :class:`natriton.messages.ModelInfo` per model (JSON), written by the router."""

MODEL_FILES_BUCKET: Final = "natriton_model_files"
"""NATS object store with files the services need beside models (tokenizers), named `<model>/<file>`."""

ROUTES_BUCKET: Final = "natriton_routes"
"""NATS KV bucket with one :class:`natriton.messages.RoutePolicy` per model (JSON), changed by operators."""


def replies_subject(instance_id: str) -> str:
    """The private reply subject of one ingest instance."""
    return f"{REPLIES_PREFIX}.{instance_id}"


def queue_group(service: str) -> str:
    """The queue group every copy of ``service`` joins, so each message goes to exactly one copy."""
    return f"natriton.{service}"
