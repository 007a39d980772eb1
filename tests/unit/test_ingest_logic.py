"""The front door: admit() applies request id, size, deadline, encoding and validation rules in order, and gives
the request its envelope; answer_subject() picks where the one answer goes."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import msgspec
import pytest

from natriton import headers as h
from natriton.envelope import Envelope
from natriton.errors import ErrorCode, MeshError
from natriton.messages import Codec, ImageInput, InferRequest, InferResponse, RawOutputs, Tensor, TensorInput
from natriton_ingest.logic import (
    Admitted,
    admit,
    answer_subject,
    deadline_of,
    decode_request,
    request_id_of,
    wants_json,
)

NOW = 1_700_000_000_000
REPLY_TO = "natriton.v1.internal.replies.ingest-1"
LIMITS: dict[str, Any] = {
    "now_ms": NOW,
    "reply_to": REPLY_TO,
    "max_payload_bytes": 4096,
    "default_timeout_ms": 10_000,
    "max_timeout_ms": 60_000,
    "max_top_k": 100,
}
CODEC: Codec[InferRequest] = Codec(InferRequest)
REQUEST = InferRequest(model="mobilenet_v2", input=ImageInput(data=b"\xff\xd8jpeg"), top_k=3)


def _admit(data: bytes, headers: dict[str, str] | None = None, **overrides: Any) -> Admitted:
    return admit(data, headers or {}, **{**LIMITS, **overrides})


def _refused(data: bytes, headers: dict[str, str] | None = None, **overrides: Any) -> MeshError:
    with pytest.raises(MeshError) as info:
        _admit(data, headers, **overrides)
    return info.value


def test_admits_a_msgpack_request_with_defaults() -> None:
    admitted = _admit(CODEC.encode(REQUEST))
    assert admitted.request == REQUEST
    assert admitted.json is False
    assert admitted.envelope.deadline_ms == NOW + 10_000
    assert re.fullmatch(r"[0-9a-f]{32}", admitted.request_id)
    assert admitted.envelope.request_id == admitted.request_id
    assert admitted.envelope.reply_to == REPLY_TO
    assert re.fullmatch(r"[0-9a-f]{32}", admitted.envelope.mesh_id)


def test_envelope_has_a_fresh_mesh_id_even_when_the_producer_reuses_its_id() -> None:
    headers = {h.REQUEST_ID: "frame-7"}
    first, second = _admit(CODEC.encode(REQUEST), headers), _admit(CODEC.encode(REQUEST), headers)
    assert first.request_id == second.request_id == "frame-7"
    assert first.envelope.mesh_id != second.envelope.mesh_id
    assert first.envelope == Envelope(
        mesh_id=first.envelope.mesh_id, request_id="frame-7", deadline_ms=NOW + 10_000, reply_to=REPLY_TO
    )
    assert Envelope.from_headers(first.envelope.to_headers()) == first.envelope


def test_json_content_type_decodes_json() -> None:
    body = json.dumps(
        {"type": "infer_request", "model": "m", "input": {"type": "image", "data": "aGVsbG8="}, "top_k": 2}
    ).encode()
    admitted = _admit(body, {h.CONTENT_TYPE: "application/json; charset=utf-8"})
    assert admitted.json is True
    assert admitted.request == InferRequest(model="m", input=ImageInput(data=b"hello"), top_k=2)


def test_json_body_without_json_content_type_is_refused() -> None:
    body = CODEC.encode(REQUEST, json=True)
    err = _refused(body)
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert "msgpack" in err.message


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", True),
        ("Application/JSON", True),
        (" application/json ;charset=utf-8", True),
        ("application/msgpack", False),
        ("text/json", False),
        ("", False),
    ],
)
def test_wants_json(content_type: str, expected: bool) -> None:
    assert wants_json({h.CONTENT_TYPE: content_type}) is expected


def test_tensor_request_is_admitted() -> None:
    req = InferRequest(
        model="m", input=TensorInput(tensors=(Tensor(name="x", datatype="FP32", shape=(1, 1), data=b"\0" * 4),))
    )
    assert _admit(CODEC.encode(req)).request == req


# ------------------------------------------------------------------------------------------------
# size
# ------------------------------------------------------------------------------------------------
def test_payload_too_large() -> None:
    body = CODEC.encode(InferRequest(model="m", input=ImageInput(data=b"x" * 5000)))
    err = _refused(body)
    assert err.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert str(len(body)) in err.message and "4096" in err.message


def test_payload_at_the_limit_is_admitted() -> None:
    body = CODEC.encode(REQUEST)
    assert _admit(body, max_payload_bytes=len(body)).request == REQUEST
    assert _refused(body, max_payload_bytes=len(body) - 1).code is ErrorCode.PAYLOAD_TOO_LARGE


def test_size_is_checked_before_anything_else() -> None:
    # garbage, oversized, with an expired deadline: size wins (cheapest check, the clearest answer)
    err = _refused(b"\xc1" * 5000, {h.DEADLINE: str(NOW - 1)})
    assert err.code is ErrorCode.PAYLOAD_TOO_LARGE


# ------------------------------------------------------------------------------------------------
# deadlines
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("deadline", [NOW - 1, NOW, NOW - 3_600_000])
def test_past_deadline_is_deadline_exceeded(deadline: int) -> None:
    err = _refused(CODEC.encode(REQUEST), {h.DEADLINE: str(deadline)})
    assert err.code is ErrorCode.DEADLINE_EXCEEDED
    assert err.code.retryable


def test_future_deadline_header_is_kept() -> None:
    assert _admit(CODEC.encode(REQUEST), {h.DEADLINE: str(NOW + 1234)}).envelope.deadline_ms == NOW + 1234


def test_timeout_header_is_relative_to_now() -> None:
    assert _admit(CODEC.encode(REQUEST), {h.TIMEOUT_MS: "250"}).envelope.deadline_ms == NOW + 250


@pytest.mark.parametrize("timeout", ["0", "-5"])
def test_zero_or_negative_timeout_is_deadline_exceeded(timeout: str) -> None:
    assert _refused(CODEC.encode(REQUEST), {h.TIMEOUT_MS: timeout}).code is ErrorCode.DEADLINE_EXCEEDED


def test_deadline_header_wins_over_timeout_header() -> None:
    admitted = _admit(CODEC.encode(REQUEST), {h.DEADLINE: str(NOW + 500), h.TIMEOUT_MS: "9000"})
    assert admitted.envelope.deadline_ms == NOW + 500


@pytest.mark.parametrize(
    "headers",
    [{h.DEADLINE: str(NOW + 3_600_000)}, {h.TIMEOUT_MS: "3600000"}],
)
def test_deadline_is_capped_at_max_timeout(headers: dict[str, str]) -> None:
    assert _admit(CODEC.encode(REQUEST), headers).envelope.deadline_ms == NOW + 60_000


@pytest.mark.parametrize(
    "headers",
    [
        {h.DEADLINE: "tomorrow"},
        {h.DEADLINE: "1.7e12"},
        {h.DEADLINE: ""},
        {h.TIMEOUT_MS: "1.5"},
        {h.TIMEOUT_MS: "10s"},
    ],
)
def test_non_integer_deadline_is_invalid_argument(headers: dict[str, str]) -> None:
    err = _refused(CODEC.encode(REQUEST), headers)
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert h.DEADLINE in err.message and h.TIMEOUT_MS in err.message


def test_deadline_of_without_headers_uses_default() -> None:
    assert deadline_of({}, NOW, 700, 60_000) == NOW + 700


# ------------------------------------------------------------------------------------------------
# body validation
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xc1\xc1\xc1",  # 0xc1 is never used in msgpack
        b"\x89PNG\r\n\x1a\n not msgpack",
        msgspec.msgpack.encode({"type": "infer_request", "model": "m"}),  # no input
        msgspec.msgpack.encode({"type": "infer_request", "model": 7, "input": {"type": "image", "data": b"x"}}),
        msgspec.msgpack.encode({"type": "infer_request", "model": "m", "input": {"type": "video", "data": b"x"}}),
        msgspec.msgpack.encode({"type": "infer_request", "model": "m", "input": {"type": "image", "data": 3}}),
        Codec(InferResponse).encode(
            InferResponse(request_id="r", model="m", version="1", result=RawOutputs(tensors=()))
        ),
    ],
)
def test_garbage_or_wrong_message_is_invalid_argument(body: bytes) -> None:
    err = _refused(body)
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert "infer_request" in err.message


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b"not json",
        b'{"type": "infer_request"}',
        b'{"model": "m", "input": {"type": "image", "data": ""}}',  # no type tag
        b'{"type": "_no_other_request"}',
        b'{"type": "infer_request", "model": "m", "input": {"type": "image", "data": ""}, "x": '
        + b"[" * 1_000
        + b"]" * 1_000
        + b"}",
    ],
    ids=["truncated", "array", "not-json", "no-fields", "no-type", "placeholder-type", "deeply-nested"],
)
def test_garbage_json_is_invalid_argument(body: bytes) -> None:
    err = _refused(body, {h.CONTENT_TYPE: h.JSON})
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert "JSON" in err.message


@pytest.mark.parametrize("json_form", [False, True], ids=["msgpack", "json"])
def test_request_without_the_type_tag_is_refused(json_form: bool) -> None:
    untagged = {"model": "m", "input": {"type": "image", "data": "aGVsbG8=" if json_form else b"hello"}}
    body = json.dumps(untagged).encode() if json_form else msgspec.msgpack.encode(untagged)
    with pytest.raises(MeshError) as info:
        decode_request(body, json=json_form)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert "`type`" in info.value.message
    tagged = {"type": "infer_request", **untagged}
    body = json.dumps(tagged).encode() if json_form else msgspec.msgpack.encode(tagged)
    assert decode_request(body, json=json_form) == InferRequest(model="m", input=ImageInput(data=b"hello"))


@pytest.mark.parametrize("top_k", [0, -1, 101, 10_000])
def test_top_k_out_of_range_is_invalid_argument(top_k: int) -> None:
    err = _refused(CODEC.encode(InferRequest(model="m", input=ImageInput(data=b"x"), top_k=top_k)))
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert "top_k" in err.message


@pytest.mark.parametrize("top_k", [1, 100])
def test_top_k_at_the_bounds_is_admitted(top_k: int) -> None:
    body = CODEC.encode(InferRequest(model="m", input=ImageInput(data=b"x"), top_k=top_k))
    assert _admit(body).request.top_k == top_k


# ------------------------------------------------------------------------------------------------
# request ids
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("given", ["abc-123", "x", "r" * 128, "order 42 / item 7"])
def test_sane_request_id_is_kept(given: str) -> None:
    assert _admit(CODEC.encode(REQUEST), {h.REQUEST_ID: given}).request_id == given


@pytest.mark.parametrize("given", [None, ""])
def test_missing_request_id_is_made_up(given: str | None) -> None:
    headers = {} if given is None else {h.REQUEST_ID: given}
    rid = request_id_of(headers)
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert request_id_of(headers) != rid  # a new one each time


@pytest.mark.parametrize("given", ["r" * 129, "line\nbreak", "tab\there", "nul\x00", "bell\x07", "r" * 10_000])
def test_malformed_request_id_is_invalid_argument(given: str) -> None:
    with pytest.raises(MeshError) as info:
        request_id_of({h.REQUEST_ID: given})
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert h.REQUEST_ID in info.value.message and "128" in info.value.message
    err = _refused(CODEC.encode(REQUEST), {h.REQUEST_ID: given})  # admit refuses it before anything else
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert h.REQUEST_ID in err.message


def test_malformed_request_id_is_checked_before_the_size() -> None:
    err = _refused(b"x" * 5000, {h.REQUEST_ID: "r" * 129})
    assert err.code is ErrorCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("data", "headers", "code"),
    [
        (b"x" * 5000, {}, ErrorCode.PAYLOAD_TOO_LARGE),
        (CODEC.encode(REQUEST), {h.DEADLINE: str(NOW - 1)}, ErrorCode.DEADLINE_EXCEEDED),
        (b"\xc1", {}, ErrorCode.INVALID_ARGUMENT),
        (CODEC.encode(InferRequest(model="m", input=ImageInput(data=b"x"), top_k=0)), {}, ErrorCode.INVALID_ARGUMENT),
    ],
    ids=["size", "deadline", "body", "top_k"],
)
def test_refusals_carry_the_request_id(data: bytes, headers: dict[str, str], code: ErrorCode) -> None:
    err = _refused(data, {h.REQUEST_ID: "order-42", **headers})
    assert err.code is code
    assert err.request_id == "order-42"
    made_up = _refused(data, headers)
    assert re.fullmatch(r"[0-9a-f]{32}", made_up.request_id)  # the id the producer would have got


def test_malformed_request_id_is_not_replaced_and_the_error_carries_none() -> None:
    err = _refused(CODEC.encode(REQUEST), {h.REQUEST_ID: "r" * 129})
    assert err.request_id == ""  # the producer's id is not echoed, and no made-up one stands in for it
    assert "no request id" in err.message


# ------------------------------------------------------------------------------------------------
# hostile bodies: nesting, encodings, what error messages can carry
# ------------------------------------------------------------------------------------------------
DEPTH = 100_000
FIELDS: dict[str, Any] = {"type": "infer_request", "model": "m", "input": {"type": "text", "text": "hi"}}


def _msgpack_map(*entries: tuple[str, bytes]) -> bytes:
    """A msgpack map written by hand, so a value can be any bytes (msgspec would not encode the nesting)."""
    return bytes([0x80 + len(entries)]) + b"".join(msgspec.msgpack.encode(k) + v for k, v in entries)


def _nested(container: bytes) -> bytes:
    """100,000 nested one-element arrays (``\\x91``) or one-entry maps (``\\x81`` + key) around a nil."""
    return container * DEPTH + b"\xc0"


_TYPE, _MODEL = ("type", msgspec.msgpack.encode("infer_request")), ("model", msgspec.msgpack.encode("m"))
_INPUT = ("input", msgspec.msgpack.encode(FIELDS["input"]))
_INPUT_WITH_EXTRA = _msgpack_map(("type", b"\xa4text"), ("text", b"\xa2hi"), ("extra", _nested(b"\x91")))


@pytest.mark.parametrize(
    "body",
    [
        _msgpack_map(_TYPE, _MODEL, _INPUT, ("extra", _nested(b"\x91"))),
        _msgpack_map(("extra", _nested(b"\x81\xa1k")), _TYPE, _MODEL, _INPUT),
        _msgpack_map(_TYPE, _MODEL, ("input", _INPUT_WITH_EXTRA)),
    ],
    ids=["unknown-field-last", "unknown-field-first", "inside-input"],
)
def test_deep_nesting_in_msgpack_is_refused_at_once(body: bytes) -> None:
    started = time.perf_counter()
    err = _refused(body, max_payload_bytes=1 << 20)
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert "nested too deeply" in err.message
    assert time.perf_counter() - started < 0.5  # bounded by the recursion limit: stops after ~1,000 levels


@pytest.mark.parametrize(
    "nested",
    [b"[" * DEPTH + b"]" * DEPTH, b'{"k":' * DEPTH + b"null" + b"}" * DEPTH, b"[" * DEPTH],
    ids=["arrays", "objects", "unclosed"],
)
@pytest.mark.parametrize("where", ["first", "last", "inside-input"])
def test_deep_nesting_in_json_is_refused_at_once(nested: bytes, where: str) -> None:
    fields = json.dumps(FIELDS).encode()
    body = {
        "first": b'{"extra": ' + nested + b", " + fields[1:],
        "last": fields[:-1] + b', "extra": ' + nested + b"}",
        "inside-input": fields[:-2] + b', "extra": ' + nested + b"}}",
    }[where]
    err = _refused(body, {h.CONTENT_TYPE: h.JSON}, max_payload_bytes=1 << 20)
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert "nested too deeply" in err.message


def test_moderate_nesting_in_unknown_fields_is_ignored() -> None:
    body = json.dumps({**FIELDS, "extra": [[[[{"a": [1, {"b": None}]}]]]], "more": {"x": "y"}}).encode()
    assert _admit(body, {h.CONTENT_TYPE: h.JSON}).request == CODEC.decode(json.dumps(FIELDS).encode(), json=True)


@pytest.mark.parametrize("json_form", [False, True], ids=["msgpack", "json"])
@pytest.mark.parametrize("where", ["model", "tag", "text"])
def test_strings_that_are_not_utf8_are_invalid_argument(json_form: bool, where: str) -> None:
    """They were a UnicodeDecodeError out of msgspec, which no caller caught: the producer got ``internal``."""
    marker = "\u0000MARK\u0000"
    fields: dict[str, Any] = {**FIELDS, "input": {"type": "text", "text": "hi"}}
    if where == "model":
        fields["model"] = marker
    elif where == "tag":
        fields["type"] = marker
    else:
        fields["input"]["text"] = marker
    body = json.dumps(fields).encode() if json_form else msgspec.msgpack.encode(fields)
    if json_form:
        body = body.replace(b"\\u0000MARK\\u0000", b"\xff\xfe")
    else:
        body = body.replace(b"\x00MARK\x00", b"\xff\xfe" * 3)  # the same length: the str header stays right
    assert b"\xff\xfe" in body
    err = _refused(body, {h.CONTENT_TYPE: h.JSON} if json_form else {})
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert "UTF-8" in err.message


@pytest.mark.parametrize("tag", ["infer\r\nX-Injected: 1", "x" * 1_000_000], ids=["crlf", "a-megabyte"])
def test_error_messages_are_one_bounded_printable_line(tag: str) -> None:
    """msgspec quotes a bad tag as it came; the message also travels in the Nats-Service-Error header."""
    err = _refused(json.dumps({**FIELDS, "type": tag}).encode(), {h.CONTENT_TYPE: h.JSON}, max_payload_bytes=2 << 20)
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert err.message.isprintable() and len(err.message) <= 600
    assert "$.type" in err.message  # the end of the message (where) is kept


@pytest.mark.parametrize("value", ["1_000", "\u0661\u0662\u0663", "0x10", "9" * 5_000, "1 000"])
def test_deadline_headers_are_plain_decimal_integers(value: str) -> None:
    for name in (h.DEADLINE, h.TIMEOUT_MS):
        err = _refused(CODEC.encode(REQUEST), {name: value})
        assert err.code is ErrorCode.INVALID_ARGUMENT
        assert name in err.message


@pytest.mark.parametrize(("value", "deadline"), [("+250", NOW + 250), (" 250 ", NOW + 250), ("0250", NOW + 250)])
def test_signed_or_padded_timeouts_are_integers(value: str, deadline: int) -> None:
    assert _admit(CODEC.encode(REQUEST), {h.TIMEOUT_MS: value}).envelope.deadline_ms == deadline


# ------------------------------------------------------------------------------------------------
# where the answer goes
# ------------------------------------------------------------------------------------------------
def test_reply_subject_wins() -> None:
    assert answer_subject("_INBOX.abc", {}, "m") == "_INBOX.abc"
    assert answer_subject("_INBOX.abc", {h.RESULTS_TO: "camera.7.answers"}, "m") == "_INBOX.abc"
    assert answer_subject("_INBOX.abc", {h.RESULTS_TO: "bad.*"}, "m") == "_INBOX.abc"  # ignored with a reply


def test_without_reply_or_results_to_the_answer_goes_nowhere() -> None:
    assert answer_subject("", {}, "m") == ""
    assert answer_subject("", {h.RESULTS_TO: "  "}, "m") == ""


@pytest.mark.parametrize("subject", ["camera.7.answers", "results", "natritonx.answers", "_INBOX.x.y"])
def test_results_to_a_subject(subject: str) -> None:
    assert answer_subject("", {h.RESULTS_TO: subject}, "mobilenet_v2") == subject
    assert answer_subject("", {h.RESULTS_TO: f" {subject} "}, "mobilenet_v2") == subject


def test_results_to_shared_is_the_models_results_subject() -> None:
    assert answer_subject("", {h.RESULTS_TO: "shared"}, "mobilenet_v2") == "natriton.v1.results.mobilenet_v2"
    assert answer_subject("", {h.RESULTS_TO: "shared"}, "bad.model name") == "natriton.v1.results._invalid"


@pytest.mark.parametrize(
    "subject",
    [
        "camera.*",
        "camera.>",
        ">",
        "camera..answers",
        ".camera",
        "camera.",
        "camera answers",
        "tab\there",
        "x" * 257,
        "natriton.v1.infer",
        "natriton.v1.infer.more",
        "natriton.v1.inference.done",
        "natriton.v1.results.mobilenet_v2",  # a producer must not post answers on the shared subject
        "natriton",
        "natriton.v1.internal.preprocess",
        "natriton.v1.internal.replies.ingest-1",
        "$JS.API.STREAM.LIST",
        "$SYS.REQ.SERVER.PING",
    ],
)
def test_results_to_wildcards_or_the_meshs_own_subjects_are_refused(subject: str) -> None:
    with pytest.raises(MeshError) as info:
        answer_subject("", {h.RESULTS_TO: subject}, "m")
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert h.RESULTS_TO in info.value.message
