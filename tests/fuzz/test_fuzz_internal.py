"""Every internal message through ``decode_task`` (and the reply, cache and control codecs): arbitrary bytes,
arbitrary envelopes, mutated valid messages. A message decodes, or it is a typed error, never ``internal``."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import event, given
from hypothesis import strategies as st

from natriton import headers as h
from natriton.control import decode_request
from natriton.errors import ErrorCode, MeshError, invalid_argument
from natriton.messages import (
    CacheEntry,
    Codec,
    FrameTask,
    InferTask,
    ModelControl,
    PostprocessTask,
    PreprocessTask,
    Reply,
    StreamControl,
    StreamControlAnswer,
)
from natriton.pipeline import decode_task
from natriton.runtime import Inbound
from natriton.streams import validate_source
from tests.fuzz.strategies import HEADER_TEXT, JSON_VALUES, assert_typed, encodable, encoded, mutated

TASKS: dict[str, Any] = {
    "preprocess_task": PreprocessTask,
    "frame_task": FrameTask,
    "infer_task": InferTask,
    "postprocess_task": PostprocessTask,
}
CODECS: dict[str, Codec[Any]] = {tag: Codec(message) for tag, message in TASKS.items()}
ENVELOPE = {
    h.MESH_ID: "0123456789abcdef0123456789abcdef",
    h.REQUEST_ID: "r-1",
    h.DEADLINE: "1700000000000",
    h.REPLY_TO: "natriton.v1.internal.replies.ingest-1",
}
ENVELOPES = st.just(ENVELOPE) | st.dictionaries(
    st.sampled_from([h.MESH_ID, h.REQUEST_ID, h.DEADLINE, h.REPLY_TO, h.ACK_TO]), HEADER_TEXT
)
REPLIES = ("$JS.ACK.frames.c.1.1.1.1.1", "_INBOX.x", "")


def check_decode_task(tag: str, data: bytes, headers: dict[str, str], reply: str) -> None:
    """``decode_task`` returns the message type it was asked for with its envelope, or a typed error."""
    try:
        inbound = Inbound(subject="natriton.v1.internal.x", data=data, headers=headers, reply=reply)
        message, envelope = decode_task(CODECS[tag], inbound)
    except MeshError as exc:
        assert_typed(exc, ErrorCode.INVALID_ARGUMENT)
        event("refused")
        return
    event("decoded")
    assert isinstance(message, TASKS[tag])
    assert envelope.mesh_id == headers[h.MESH_ID]


@given(
    tag=st.sampled_from(sorted(TASKS)),
    data=st.binary(max_size=1024),
    headers=ENVELOPES,
    reply=st.sampled_from(REPLIES),
)
def test_arbitrary_bytes(tag: str, data: bytes, headers: dict[str, str], reply: str) -> None:
    check_decode_task(tag, data, headers, reply)


@given(tag=st.sampled_from(sorted(TASKS)), value=JSON_VALUES, tagged=st.booleans())
def test_arbitrary_structures(tag: str, value: Any, tagged: bool) -> None:
    if tagged and isinstance(value, dict):
        value = {"type": tag, **value}
    check_decode_task(tag, encoded(value, json=False), ENVELOPE, "")


@given(data=st.data(), tag=st.sampled_from(sorted(TASKS)))
def test_valid_and_mutated_messages(data: st.DataObject, tag: str) -> None:
    message = data.draw(st.from_type(TASKS[tag]))
    body = encodable(message, CODECS[tag].encode)
    if body is None:
        return
    decoded, _ = decode_task(CODECS[tag], Inbound(subject="s", data=body, headers=ENVELOPE, reply=""))
    assert decoded == message  # a valid message round-trips
    check_decode_task(tag, data.draw(mutated(st.just(body), head=128)), ENVELOPE, "")


OTHER_CODECS: dict[str, Codec[Any]] = {
    "reply": Codec(Reply),
    "cache_entry": Codec(CacheEntry),
    "stream_control_answer": Codec(StreamControlAnswer),
}


@given(
    name=st.sampled_from(sorted(OTHER_CODECS)),
    data=st.binary(max_size=512) | JSON_VALUES.map(msgspec.msgpack.encode),
    json=st.booleans(),
)
def test_other_codecs_raise_only_msgspec_errors(name: str, data: bytes, json: bool) -> None:
    """Replies between hops, cache entries and control answers: a :class:`msgspec.MsgspecError` (which every
    caller catches) or a message, never another exception."""
    try:
        OTHER_CODECS[name].decode(data, json=json)
    except msgspec.MsgspecError as exc:
        assert_typed(invalid_argument(str(exc)))


CONTROLS: dict[str, Codec[Any]] = {"stream_control": Codec(StreamControl), "model_control": Codec(ModelControl)}


@given(data=st.data(), name=st.sampled_from(sorted(CONTROLS)), json=st.booleans())
def test_control_requests(data: st.DataObject, name: str, json: bool) -> None:
    """Control requests, JSON or msgpack (told apart by their first byte): arbitrary, structured, mutated."""
    valid = st.from_type(StreamControl if name == "stream_control" else ModelControl)
    body = data.draw(
        st.binary(max_size=512)
        | JSON_VALUES.map(lambda v: encoded({"type": name, **v} if isinstance(v, dict) else v, json=json))
        | mutated(valid.map(lambda m: encodable(m, lambda x: CONTROLS[name].encode(x, json=json)) or b"{}"), head=64)
    )
    try:
        request, json_form = decode_request(CONTROLS[name], body, name)
    except MeshError as exc:
        assert_typed(exc, ErrorCode.INVALID_ARGUMENT)
        return
    assert isinstance(request, StreamControl | ModelControl)
    assert json_form == body[:64].lstrip().startswith(b"{")
    if isinstance(request, StreamControl) and request.source is not None:
        try:
            validate_source(request.source)  # what ingest checks before it stores a camera
        except MeshError as exc:
            assert_typed(exc, ErrorCode.INVALID_ARGUMENT)
