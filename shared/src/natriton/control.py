"""Operator control endpoints (request/reply on ``natriton.v1.control.*``): decoding and answering.

A control request may be msgpack or JSON (``nats req natriton.v1.control.models '{"type": ...}'`` works); the
answer uses the request's encoding, and a typed error carries the NATS micro error headers.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from natriton import headers
from natriton.errors import invalid_argument
from natriton.messages import Codec, ErrorReply
from natriton.runtime import ServiceRuntime
from natriton_client.protocol import one_line

T = TypeVar("T")


def is_json(data: bytes) -> bool:
    """Whether a control request is JSON (it starts with ``{``, after any whitespace) rather than msgpack (whose
    map never starts with a whitespace byte)."""
    return data[:64].lstrip()[:1] == b"{"


def decode_request(codec: Codec[T], data: bytes, what: str) -> tuple[T, bool]:
    """The request and whether it was JSON; a malformed one is ``invalid_argument``."""
    json_form = is_json(data)
    try:
        return codec.decode(data, json=json_form), json_form
    except msgspec.MsgspecError as exc:
        raise invalid_argument(f"malformed {what} request: {exc}") from exc


async def respond(runtime: ServiceRuntime, reply_to: str, codec: Codec[Any], answer: Any, json_form: bool) -> None:
    """Send a control answer (a reply or an :class:`ErrorReply`) to ``reply_to`` in the request's encoding."""
    if not reply_to:
        return
    out = {headers.CONTENT_TYPE: headers.JSON if json_form else headers.MSGPACK}
    if isinstance(answer, ErrorReply):
        out[headers.SERVICE_ERROR] = one_line(answer.message)  # a header: one printable, bounded line
        out[headers.SERVICE_ERROR_CODE] = str(answer.code.status)
    await runtime.publish(reply_to, codec.encode(answer, json=json_form), out)
