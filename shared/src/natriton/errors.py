"""Typed error codes shared by every service and every client.

A client branches on :class:`ErrorCode`; the numeric code travels in the NATS micro
``Nats-Service-Error-Code`` header so tools that only know NATS micro understand it too.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """What went wrong, in a form a client can branch on."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    OVERLOADED = "overloaded"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"

    @property
    def status(self) -> int:
        """The HTTP-like number sent in ``Nats-Service-Error-Code``."""
        return _STATUS[self]

    @property
    def retryable(self) -> bool:
        """Whether sending the same request again later may succeed."""
        return self in (ErrorCode.DEADLINE_EXCEEDED, ErrorCode.OVERLOADED, ErrorCode.UNAVAILABLE)


_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.OVERLOADED: 429,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.DEADLINE_EXCEEDED: 504,
}


class MeshError(Exception):
    """An error that becomes a typed error reply to the requester.

    Raise it anywhere in a request's path; the service runtime turns it into an
    :class:`natriton.messages.ErrorReply`. Anything else raised becomes ``internal``.
    """

    def __init__(
        self, code: ErrorCode, message: str, *, retry_after_ms: int | None = None, request_id: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms
        self.request_id = request_id
        """Set once the request has an id, so the error reply can carry it."""

    def __repr__(self) -> str:
        return f"MeshError({self.code.value}: {self.message})"


def invalid_argument(message: str) -> MeshError:
    """Shorthand for a client mistake that retrying will not fix."""
    return MeshError(ErrorCode.INVALID_ARGUMENT, message)
