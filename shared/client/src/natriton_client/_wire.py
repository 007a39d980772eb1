"""Pure helpers of the clients: requests, headers, deadlines, reply decoding, trace context (no I/O).

Only ``msgspec`` is needed here; OpenTelemetry is used only when it is importable, and then only its API.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from natriton_client.errors import DeadlineExceeded, InvalidArgument, code_from_status
from natriton_client.protocol import (
    JSON,
    MAX_REQUEST_ID_LENGTH,
    MSGPACK,
    RESERVED_SUBJECT_PREFIXES,
    SHARED_RESULTS,
    AudioInput,
    Codec,
    ErrorCode,
    ErrorReply,
    Header,
    ImageInput,
    InferRequest,
    InputPayload,
    Reply,
    Tensor,
    TensorInput,
    TextInput,
    is_results_destination,
    is_valid_request_id,
)

REQUEST_CODEC: Final[Codec[InferRequest]] = Codec(InferRequest)
REPLY_CODEC: Final[Codec[Reply]] = Codec(Reply)


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------
def make_request(
    model: str,
    *,
    image: bytes | None = None,
    tensors: Sequence[Tensor] | None = None,
    text: str | None = None,
    audio: AudioInput | None = None,
    version: str = "",
    top_k: int = 5,
    use_cache: bool = True,
) -> InferRequest:
    """The :class:`InferRequest` for exactly one of ``image=``, ``tensors=``, ``text=`` or ``audio=`` (else
    ``ValueError``)."""
    inputs = (("image", image), ("tensors", tensors), ("text", text), ("audio", audio))
    given = [name for name, p in inputs if p is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of image=, tensors=, text= or audio= (got {', '.join(given) or 'none'})")
    payload: InputPayload
    if image is not None:
        payload = ImageInput(data=image)
    elif text is not None:
        payload = TextInput(text=text)
    elif audio is not None:
        payload = audio
    else:
        payload = TensorInput(tensors=tuple(tensors or ()))
    return InferRequest(model=model, input=payload, version=version, top_k=top_k, use_cache=use_cache)


def check_request_id(request_id: str) -> None:
    """Refuse (``InvalidArgument``, client side) an id the mesh would refuse: over 128 or non-printable chars."""
    if request_id and not is_valid_request_id(request_id):
        raise InvalidArgument(
            f"{Header.REQUEST_ID} must be at most {MAX_REQUEST_ID_LENGTH} printable characters "
            f"(got {len(request_id)} characters)",
            attempts=0,
        )


def check_results_to(results_to: str) -> str:
    """``results_to`` as it will be sent: ``shared`` or a plain subject outside the mesh's own.

    Anything else would make the mesh drop the request silently (there is nowhere to send the error), so it is
    refused here with ``InvalidArgument``.
    """
    value = results_to.strip()
    if not is_results_destination(value):
        reserved = ", ".join(f"{p}…" for p in RESERVED_SUBJECT_PREFIXES)
        raise InvalidArgument(
            f"results_to must be {SHARED_RESULTS!r} or a subject without wildcards or empty tokens, at most 256 "
            f"characters, outside the mesh's and the server's own ({reserved}) (got {results_to!r})",
            attempts=0,
        )
    return value


def new_request_id() -> str:
    """A fresh request id (32 hex characters, like the ones the mesh makes)."""
    return uuid.uuid4().hex


def new_results_subject(prefix: str = "_INBOX") -> str:
    """A unique subject to receive fire-and-forget answers on, ``_INBOX.<32 hex>`` by default."""
    subject = f"{prefix}.{uuid.uuid4().hex}"
    check_results_to(subject)
    return subject


# --------------------------------------------------------------------------------------------
# Deadlines
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Deadline:
    """The one deadline of a call (shared by all its attempts), on the monotonic clock.

    With an absolute ``deadline_ms`` (Unix epoch ms) the request carries ``Natriton-Deadline`` unchanged; with a
    relative timeout each attempt carries ``Natriton-Timeout-Ms`` = the time left then (immune to clock skew
    between producer and mesh).
    """

    at_s: float
    """When it passes, in ``time.monotonic()`` seconds."""
    epoch_ms: int | None = None
    """The absolute deadline the caller gave, sent as ``Natriton-Deadline``; ``None`` for a relative timeout."""

    @classmethod
    def of(
        cls,
        *,
        timeout_s: float | None,
        deadline_ms: int | None,
        default_timeout_s: float,
        now_s: float,
        now_ms: int,
    ) -> Deadline:
        """``deadline_ms`` wins over ``timeout_s`` (as in the protocol); neither: ``default_timeout_s``."""
        if deadline_ms is not None:
            return cls(at_s=now_s + (deadline_ms - now_ms) / 1000.0, epoch_ms=int(deadline_ms))
        timeout = default_timeout_s if timeout_s is None else timeout_s
        if not timeout > 0:
            raise ValueError(f"timeout_s must be > 0 (got {timeout!r})")
        return cls(at_s=now_s + timeout)

    def remaining_s(self, now_s: float) -> float:
        """Seconds left (negative once passed)."""
        return self.at_s - now_s

    def headers(self, now_s: float) -> dict[str, str]:
        """The deadline header of an attempt sent at ``now_s``; ``DeadlineExceeded`` (client side) if passed."""
        remaining_ms = int(self.remaining_s(now_s) * 1000)
        if remaining_ms < 1:
            raise DeadlineExceeded("the deadline passed before the request was sent", attempts=0)
        if self.epoch_ms is not None:
            return {Header.DEADLINE: str(self.epoch_ms)}
        return {Header.TIMEOUT_MS: str(remaining_ms)}


# --------------------------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------------------------
def request_headers(
    *,
    json: bool,
    deadline: Mapping[str, str],
    request_id: str = "",
    trace: Mapping[str, str] | None = None,
    results_to: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The NATS headers of one request. ``extra`` is applied last (it may override anything)."""
    out = {Header.CONTENT_TYPE: JSON if json else MSGPACK, **deadline}
    if request_id:
        out[Header.REQUEST_ID] = request_id
    if results_to:
        out[Header.RESULTS_TO] = results_to
    out.update(trace or {})
    out.update(extra or {})
    return out


@functools.cache
def _trace_propagator() -> Any:
    """OpenTelemetry's W3C trace-context propagator (API only), or ``None`` when opentelemetry is not installed."""
    try:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        return None
    return TraceContextTextMapPropagator()


def current_trace_headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the current OpenTelemetry span; ``{}`` without opentelemetry or
    without a valid current span."""
    propagator = _trace_propagator()
    if propagator is None:
        return {}
    carrier: dict[str, str] = {}
    propagator.inject(carrier)
    return carrier


def trace_headers(traceparent: str | None, *, propagate: bool) -> dict[str, str]:
    """An explicit ``traceparent`` wins; else the current OpenTelemetry context when ``propagate``."""
    if traceparent:
        return {Header.TRACEPARENT: traceparent}
    return current_trace_headers() if propagate else {}


# --------------------------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------------------------
def content_is_json(headers: Mapping[str, str] | None) -> bool | None:
    """True/False from a ``Content-Type`` header; ``None`` when there is none (or an unknown one)."""
    value = (headers or {}).get(Header.CONTENT_TYPE, "").split(";")[0].strip().lower()
    return True if value == JSON else False if value == MSGPACK else None


def decode_reply(data: bytes, headers: Mapping[str, str] | None, *, json: bool | None = None) -> Reply:
    """The :data:`Reply` in a message; never raises.

    The encoding is the message's ``Content-Type``, else ``json`` (``None``: msgpack, then JSON). A body that
    does not decode becomes an :class:`ErrorReply`: the code from ``Nats-Service-Error-Code`` when the message has
    one, else ``internal``.
    """
    hdrs = headers or {}
    encoding = content_is_json(hdrs)
    if encoding is None:
        encoding = json
    attempts = [encoding] if encoding is not None else [False, True]
    error: Exception | None = None
    for as_json in attempts:
        try:
            return REPLY_CODEC.decode(data, json=as_json)
        except msgspec.MsgspecError as exc:
            error = exc
    request_id = hdrs.get(Header.REQUEST_ID, "")
    code = code_from_status(hdrs.get(Header.SERVICE_ERROR_CODE))
    if code is not None:
        message = hdrs.get(Header.SERVICE_ERROR, "") or f"error {hdrs.get(Header.SERVICE_ERROR_CODE)}"
        return ErrorReply(request_id=request_id, code=code, message=message)
    return ErrorReply(
        request_id=request_id,
        code=ErrorCode.INTERNAL,
        message=f"the client could not decode a reply of {len(data)} bytes: {error}",
    )
