"""The front door: admit() applies size, deadline, encoding and validation rules in order."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest

from natriton import headers as h
from natriton.errors import ErrorCode, MeshError
from natriton.messages import Codec, ImageInput, InferRequest, InferResponse, RawOutputs, Tensor, TensorInput
from natriton_ingest.logic import admit, deadline_of, request_id_of, wants_json

NOW = 1_700_000_000_000
LIMITS: dict[str, Any] = {
    "now_ms": NOW,
    "max_payload_bytes": 4096,
    "default_timeout_ms": 10_000,
    "max_timeout_ms": 60_000,
    "max_top_k": 100,
}
CODEC: Codec[InferRequest] = Codec(InferRequest)
REQUEST = InferRequest(model="mobilenet_v2", input=ImageInput(data=b"\xff\xd8jpeg"), top_k=3)


def _admit(data: bytes, headers: dict[str, str] | None = None, **overrides: Any) -> Any:
    return admit(data, headers or {}, **{**LIMITS, **overrides})


def _refused(data: bytes, headers: dict[str, str] | None = None, **overrides: Any) -> MeshError:
    with pytest.raises(MeshError) as info:
        _admit(data, headers, **overrides)
    return info.value


def test_admits_a_msgpack_request_with_defaults() -> None:
    admitted = _admit(CODEC.encode(REQUEST))
    assert admitted.request == REQUEST
    assert admitted.json is False
    assert admitted.deadline_ms == NOW + 10_000
    assert re.fullmatch(r"[0-9a-f]{32}", admitted.request_id)


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
    assert _admit(CODEC.encode(REQUEST), {h.DEADLINE: str(NOW + 1234)}).deadline_ms == NOW + 1234


def test_timeout_header_is_relative_to_now() -> None:
    assert _admit(CODEC.encode(REQUEST), {h.TIMEOUT_MS: "250"}).deadline_ms == NOW + 250


@pytest.mark.parametrize("timeout", ["0", "-5"])
def test_zero_or_negative_timeout_is_deadline_exceeded(timeout: str) -> None:
    assert _refused(CODEC.encode(REQUEST), {h.TIMEOUT_MS: timeout}).code is ErrorCode.DEADLINE_EXCEEDED


def test_deadline_header_wins_over_timeout_header() -> None:
    admitted = _admit(CODEC.encode(REQUEST), {h.DEADLINE: str(NOW + 500), h.TIMEOUT_MS: "9000"})
    assert admitted.deadline_ms == NOW + 500


@pytest.mark.parametrize(
    "headers",
    [{h.DEADLINE: str(NOW + 3_600_000)}, {h.TIMEOUT_MS: "3600000"}],
)
def test_deadline_is_capped_at_max_timeout(headers: dict[str, str]) -> None:
    assert _admit(CODEC.encode(REQUEST), headers).deadline_ms == NOW + 60_000


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


@pytest.mark.parametrize("body", [b"{", b"[]", b"not json", b'{"type": "infer_request"}'])
def test_garbage_json_is_invalid_argument(body: bytes) -> None:
    err = _refused(body, {h.CONTENT_TYPE: h.JSON})
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert "JSON" in err.message


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


@pytest.mark.parametrize("given", [None, "", "r" * 129, "line\nbreak", "tab\there", "nul\x00"])
def test_missing_or_insane_request_id_is_replaced(given: str | None) -> None:
    headers = {} if given is None else {h.REQUEST_ID: given}
    rid = request_id_of(headers)
    assert rid != given
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert request_id_of(headers) != rid  # a new one each time
