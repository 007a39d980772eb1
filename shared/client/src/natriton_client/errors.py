"""Typed exceptions: one class per :class:`~natriton_client.protocol.ErrorCode`, plus the client-side failures.

Every exception the clients raise for a failed request is a :class:`NatritonError`, so a caller branches on one
hierarchy whether the mesh answered with an error reply or no answer came at all::

    try:
        response = await client.infer("mobilenet_v2", image=jpeg)
    except Overloaded as exc:        # the mesh said so (after the client's own retries)
        ...
    except Unavailable as exc:       # includes NoResponders: no ingest copy is running
        ...
    except DeadlineExceeded as exc:  # includes NoReply: nothing came back at all
        ...
    except NatritonError as exc:     # anything else; exc.code says what
        ...

Errors raised on the client side (no reply at all, no responders, a request the mesh would refuse) have
``reply`` set to ``None``; errors the mesh answered with carry the :class:`~natriton_client.protocol.ErrorReply`.

Only ``msgspec`` is needed to use this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar, Final

from natriton_client.protocol import ErrorCode, ErrorReply

__all__ = [
    "ERROR_CLASSES",
    "ConnectionFailed",
    "DeadlineExceeded",
    "Internal",
    "InvalidArgument",
    "NatritonError",
    "NoReply",
    "NoResponders",
    "NotFound",
    "Overloaded",
    "PayloadTooLarge",
    "Unavailable",
    "code_from_status",
    "error_class",
    "error_from_reply",
]


class NatritonError(Exception):
    """A request failed. ``code`` says how (and whether retrying may help: ``retryable``).

    Attributes:
        code: the :class:`ErrorCode`.
        message: the human-readable message (the mesh's, or the client's for client-side errors).
        request_id: the request's ``Natriton-Request-Id`` ('' when the request had none and no reply came).
        retry_after_ms: the mesh's hint for ``overloaded``/``unavailable``, else ``None``.
        reply: the :class:`ErrorReply` the mesh sent, or ``None`` for an error raised on the client side.
        attempts: how many times the request was sent (more than 1 after retries; 0 if it never was).
    """

    default_code: ClassVar[ErrorCode] = ErrorCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        request_id: str = "",
        retry_after_ms: int | None = None,
        reply: ErrorReply | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.code: ErrorCode = code if code is not None else self.default_code
        self.message = message
        self.request_id = request_id
        self.retry_after_ms = retry_after_ms
        self.reply = reply
        self.attempts = attempts

    @property
    def retryable(self) -> bool:
        """Whether sending the same request again later may succeed (the code's rule)."""
        return self.code.retryable

    @property
    def client_side(self) -> bool:
        """True when the client raised this without an error reply from the mesh."""
        return self.reply is None

    def __str__(self) -> str:
        rid = f" [request {self.request_id}]" if self.request_id else ""
        return f"{self.code.value}: {self.message}{rid}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.value!r}, message={self.message!r}, request_id={self.request_id!r})"
        )


class InvalidArgument(NatritonError):
    """The request is malformed (bad input, header or value); retrying the same request cannot succeed."""

    default_code = ErrorCode.INVALID_ARGUMENT


class NotFound(NatritonError):
    """Unknown model or version (or one the mesh cannot use)."""

    default_code = ErrorCode.NOT_FOUND


class PayloadTooLarge(NatritonError):
    """The request is over a size limit (the mesh's, or the NATS server's ``max_payload`` on the client side)."""

    default_code = ErrorCode.PAYLOAD_TOO_LARGE


class DeadlineExceeded(NatritonError):
    """The deadline passed before or while the request was processed."""

    default_code = ErrorCode.DEADLINE_EXCEEDED


class Overloaded(NatritonError):
    """The mesh refused the request at once because a queue or concurrency limit is full; see ``retry_after_ms``."""

    default_code = ErrorCode.OVERLOADED


class Unavailable(NatritonError):
    """The mesh cannot serve the request right now (Triton failing, a circuit open); see ``retry_after_ms``."""

    default_code = ErrorCode.UNAVAILABLE


class Internal(NatritonError):
    """A bug in the mesh (the message says where), or a reply the client could not decode."""

    default_code = ErrorCode.INTERNAL


# ------------------------------------------------------------------------------------------------
# Client-side failures, placed in the same hierarchy
# ------------------------------------------------------------------------------------------------
class NoResponders(Unavailable):
    """No ingest copy is listening on ``natriton.v1.infer`` (NATS answered "no responders")."""


class NoReply(DeadlineExceeded, TimeoutError):
    """No reply at all arrived in time (the mesh normally answers ``deadline_exceeded`` itself first).

    Also a built-in :class:`TimeoutError`, so code written against ``asyncio``/``nats`` timeouts keeps working.
    """


class ConnectionFailed(Unavailable):
    """The NATS connection could not be made, or is closed or draining. Not retried: the connection must be
    made again (``AsyncClient.connect``)."""

    @property
    def retryable(self) -> bool:
        """Never: retrying on a closed connection cannot succeed."""
        return False


ERROR_CLASSES: Final[Mapping[ErrorCode, type[NatritonError]]] = MappingProxyType(
    {
        ErrorCode.INVALID_ARGUMENT: InvalidArgument,
        ErrorCode.NOT_FOUND: NotFound,
        ErrorCode.PAYLOAD_TOO_LARGE: PayloadTooLarge,
        ErrorCode.DEADLINE_EXCEEDED: DeadlineExceeded,
        ErrorCode.OVERLOADED: Overloaded,
        ErrorCode.UNAVAILABLE: Unavailable,
        ErrorCode.INTERNAL: Internal,
    }
)
"""The exception class of each error code (one per code; every code has one)."""


def error_class(code: ErrorCode) -> type[NatritonError]:
    """The exception class for ``code``."""
    return ERROR_CLASSES[code]


def code_from_status(status: int | str | None) -> ErrorCode | None:
    """The error code of a ``Nats-Service-Error-Code`` value (``"404"`` → ``not_found``); ``None`` if unknown."""
    try:
        return ErrorCode.from_status(int(status)) if status is not None else None
    except ValueError:
        return None


def error_from_reply(reply: ErrorReply, *, attempts: int = 1) -> NatritonError:
    """The typed exception for an error reply of the mesh (``reply`` is kept on it)."""
    return ERROR_CLASSES[reply.code](
        reply.message,
        code=reply.code,
        request_id=reply.request_id,
        retry_after_ms=reply.retry_after_ms,
        reply=reply,
        attempts=attempts,
    )
