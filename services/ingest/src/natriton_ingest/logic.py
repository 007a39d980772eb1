"""Pure front-door rules: encodings, request ids, deadlines, results destinations, validation."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import msgspec

from natriton import headers as h
from natriton.envelope import Envelope
from natriton.errors import ErrorCode, MeshError, invalid_argument
from natriton.messages import Codec, InferRequest, PublicRequest
from natriton_client.protocol import (
    MAX_REQUEST_ID_LENGTH,
    SHARED_RESULTS,
    is_results_destination,
    is_valid_request_id,
    results_subject,
)

REQUESTS: Codec[PublicRequest] = Codec(PublicRequest)
_INTEGER = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request that passed the front door: decoded, with its envelope and encoding."""

    request: InferRequest
    envelope: Envelope
    json: bool

    @property
    def request_id(self) -> str:
        """The producer's id (echoed back)."""
        return self.envelope.request_id


def wants_json(headers: dict[str, str]) -> bool:
    """Whether the producer speaks JSON (``Content-Type: application/json``) instead of msgpack."""
    return headers.get(h.CONTENT_TYPE, "").split(";")[0].strip().lower() == h.JSON


def request_id_of(headers: dict[str, str]) -> str:
    """The producer's request id, or a new one when it sent none; ``invalid_argument`` when it is malformed (never
    replaced: the error reply then carries no id, since the producer's cannot be echoed)."""
    given = headers.get(h.REQUEST_ID, "")
    if not given:
        return uuid.uuid4().hex
    if not is_valid_request_id(given):
        got = f"{len(given)} characters" if len(given) > MAX_REQUEST_ID_LENGTH else f"{given!r}"
        raise invalid_argument(
            f"{h.REQUEST_ID} must be 1 to {MAX_REQUEST_ID_LENGTH} printable characters (got {got}); "
            "the error carries no request id"
        )
    return given


def deadline_of(headers: dict[str, str], now_ms: int, default_timeout_ms: int, max_timeout_ms: int) -> int:
    """Absolute deadline (epoch ms): ``Natriton-Deadline`` wins over ``Natriton-Timeout-Ms``; capped at
    ``max_timeout_ms`` from now; ``default_timeout_ms`` without either."""
    if h.DEADLINE in headers:
        deadline = _integer_header(headers, h.DEADLINE)
    elif h.TIMEOUT_MS in headers:
        deadline = now_ms + _integer_header(headers, h.TIMEOUT_MS)
    else:
        deadline = now_ms + default_timeout_ms
    if deadline <= now_ms:
        raise MeshError(ErrorCode.DEADLINE_EXCEEDED, f"request arrived {now_ms - deadline} ms after its deadline")
    return min(deadline, now_ms + max_timeout_ms)


def _integer_header(headers: dict[str, str], name: str) -> int:
    """A header that must be a decimal integer (ASCII digits, an optional sign); ``invalid_argument`` otherwise
    (Python's ``int`` alone would take ``1_000`` or non-ASCII digits)."""
    value = headers[name].strip()
    try:
        if _INTEGER.fullmatch(value) is None:
            raise ValueError(value)
        return int(value)  # ValueError past 4,300 digits
    except ValueError as exc:
        message = f"{h.DEADLINE}/{h.TIMEOUT_MS} must be integers (milliseconds), got {value[:32]!r} in {name}"
        raise invalid_argument(message) from exc


def answer_subject(reply: str, headers: dict[str, str], model: str) -> str:
    """Where the one answer to a request goes: the producer's reply inbox, else ``Natriton-Results-To`` (a
    subject, or ``shared`` for ``natriton.v1.results.<model>``), else nowhere (''). Raises ``invalid_argument``
    for a results destination that is not a plain subject or is one of the mesh's own."""
    if reply:
        return reply
    results_to = headers.get(h.RESULTS_TO, "").strip()
    if not results_to:
        return ""
    if not is_results_destination(results_to):
        raise invalid_argument(f"{h.RESULTS_TO} must be a subject without wildcards outside the mesh's own")
    return results_subject(model) if results_to == SHARED_RESULTS else results_to


def admit(
    data: bytes,
    headers: dict[str, str],
    *,
    now_ms: int,
    reply_to: str,
    max_payload_bytes: int,
    default_timeout_ms: int,
    max_timeout_ms: int,
    max_top_k: int,
    mesh_id: str = "",
) -> Admitted:
    """Apply every front-door rule; raise a typed MeshError (carrying the request id once known) for the first
    one broken. ``reply_to`` is the subject of this ingest copy, written into the envelope; ``mesh_id`` the
    request's id inside the mesh (unique; a random one when empty)."""
    request_id = request_id_of(headers)
    try:
        if len(data) > max_payload_bytes:
            raise MeshError(
                ErrorCode.PAYLOAD_TOO_LARGE, f"request is {len(data)} bytes; the limit is {max_payload_bytes} bytes"
            )
        deadline_ms = deadline_of(headers, now_ms, default_timeout_ms, max_timeout_ms)
        json = wants_json(headers)
        request = decode_request(data, json=json)
        if not 1 <= request.top_k <= max_top_k:
            raise invalid_argument(f"top_k must be between 1 and {max_top_k}, got {request.top_k}")
    except MeshError as exc:
        exc.request_id = request_id
        raise
    envelope = Envelope(
        mesh_id=mesh_id or uuid.uuid4().hex, request_id=request_id, deadline_ms=deadline_ms, reply_to=reply_to
    )
    return Admitted(request=request, envelope=envelope, json=json)


def decode_request(data: bytes, *, json: bool) -> InferRequest:
    """The producer's request; ``invalid_argument`` for anything but a well-formed ``infer_request``."""
    encoding = "JSON" if json else "msgpack"
    try:
        request = REQUESTS.decode(data, json=json)
    except msgspec.MsgspecError as exc:
        raise invalid_argument(f"request is not a valid {encoding} infer_request: {exc}") from exc
    if not isinstance(request, InferRequest):
        raise invalid_argument(f"request is not a valid {encoding} infer_request: type {type(request).__name__}")
    return request
