"""Subject names and queue groups: the addresses of the mesh (all versioned ``natriton.v1.*``)."""

from __future__ import annotations

from typing import Final

PREFIX: Final = "natriton.v1"

INFER: Final = f"{PREFIX}.infer"
"""Public request/reply endpoint of ingest. A request without a reply subject is fire-and-forget:
its answer is published on :func:`results_subject` instead."""

RESULTS_PREFIX: Final = f"{PREFIX}.results"

PREPROCESS: Final = f"{PREFIX}.internal.preprocess"
ROUTE: Final = f"{PREFIX}.internal.route"
POSTPROCESS: Final = f"{PREFIX}.internal.postprocess"
REPLIES_PREFIX: Final = f"{PREFIX}.internal.replies"
"""Each ingest instance listens on ``<prefix>.<instance id>`` for the answers to the requests it accepted."""

MODELS_BUCKET: Final = "natriton_models"
"""NATS KV bucket with one :class:`natriton.messages.ModelInfo` per model, written by the router."""


ROUTES_BUCKET: Final = "natriton_routes"
"""NATS KV bucket with one :class:`natriton.messages.RoutePolicy` per model, changed at run time by operators."""


def results_subject(model: str) -> str:
    """Where answers to fire-and-forget requests for ``model`` are published."""
    return f"{RESULTS_PREFIX}.{model}"


def replies_subject(instance_id: str) -> str:
    """The private reply subject of one ingest instance."""
    return f"{REPLIES_PREFIX}.{instance_id}"


def queue_group(service: str) -> str:
    """The queue group every copy of ``service`` joins, so each message goes to exactly one copy."""
    return f"natriton.{service}"
