"""Typed errors: the public :class:`ErrorCode` and the exception the services raise to answer with one.

A client branches on :class:`ErrorCode`; the numeric code travels in the NATS micro
``Nats-Service-Error-Code`` header so tools that only know NATS micro understand it too.
"""

from __future__ import annotations

from natriton_client.protocol import ErrorCode

__all__ = ["ErrorCode", "MeshError", "invalid_argument"]


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
        self.model = ""
        """Set once the request's model is known (fire-and-forget answers to the shared subject name it)."""

    def __repr__(self) -> str:
        return f"MeshError({self.code.value}: {self.message})"


def invalid_argument(message: str) -> MeshError:
    """Shorthand for a client mistake that retrying will not fix."""
    return MeshError(ErrorCode.INVALID_ARGUMENT, message)
