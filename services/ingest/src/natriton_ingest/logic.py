"""Pure front-door rules: encodings, request ids, deadlines, validation."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import msgspec

from natriton import headers as h
from natriton.errors import ErrorCode, MeshError, invalid_argument
from natriton.messages import Codec, InferRequest

REQUESTS: Codec[InferRequest] = Codec(InferRequest)


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request that passed the front door: decoded, identified, with an absolute deadline."""

    request: InferRequest
    request_id: str
    deadline_ms: int
    json: bool


def wants_json(headers: dict[str, str]) -> bool:
    """Whether the producer speaks JSON (``Content-Type: application/json``) instead of msgpack."""
    return headers.get(h.CONTENT_TYPE, "").split(";")[0].strip().lower() == h.JSON


def request_id_of(headers: dict[str, str]) -> str:
    """The producer's request id if it sent a sane one, else a new one."""
    given = headers.get(h.REQUEST_ID, "")
    return given if 0 < len(given) <= 128 and given.isprintable() else uuid.uuid4().hex


def deadline_of(headers: dict[str, str], now_ms: int, default_timeout_ms: int, max_timeout_ms: int) -> int:
    """Absolute deadline (epoch ms) from ``Natriton-Deadline`` or ``Natriton-Timeout-Ms``, capped."""
    try:
        if h.DEADLINE in headers:
            deadline = int(headers[h.DEADLINE])
        elif h.TIMEOUT_MS in headers:
            deadline = now_ms + int(headers[h.TIMEOUT_MS])
        else:
            deadline = now_ms + default_timeout_ms
    except ValueError as exc:
        raise invalid_argument(f"{h.DEADLINE}/{h.TIMEOUT_MS} must be integers (milliseconds)") from exc
    if deadline <= now_ms:
        raise MeshError(ErrorCode.DEADLINE_EXCEEDED, f"request arrived {now_ms - deadline} ms after its deadline")
    return min(deadline, now_ms + max_timeout_ms)


def admit(
    data: bytes,
    headers: dict[str, str],
    *,
    now_ms: int,
    max_payload_bytes: int,
    default_timeout_ms: int,
    max_timeout_ms: int,
    max_top_k: int,
) -> Admitted:
    """Apply every front-door rule; raise a typed MeshError for the first one broken."""
    if len(data) > max_payload_bytes:
        raise MeshError(
            ErrorCode.PAYLOAD_TOO_LARGE, f"request is {len(data)} bytes; the limit is {max_payload_bytes} bytes"
        )
    deadline_ms = deadline_of(headers, now_ms, default_timeout_ms, max_timeout_ms)
    json = wants_json(headers)
    try:
        request = REQUESTS.decode(data, json=json)
    except msgspec.MsgspecError as exc:
        encoding = "JSON" if json else "msgpack"
        raise invalid_argument(f"request is not a valid {encoding} infer_request: {exc}") from exc
    if not 1 <= request.top_k <= max_top_k:
        raise invalid_argument(f"top_k must be between 1 and {max_top_k}, got {request.top_k}")
    return Admitted(request=request, request_id=request_id_of(headers), deadline_ms=deadline_ms, json=json)
