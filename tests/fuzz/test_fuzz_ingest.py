"""The public front door (``admit``) under arbitrary bytes and headers, JSON and msgpack, and mutated valid requests:
a request it admits keeps every documented rule; anything else is a typed error, never ``internal``."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from hypothesis import event, given
from hypothesis import strategies as st

from natriton import headers as h
from natriton.errors import ErrorCode, MeshError
from natriton.messages import Codec, ImageInput, InferRequest, Tensor, TensorInput, TextInput
from natriton_client.protocol import is_valid_request_id
from natriton_ingest.logic import Admitted, admit
from tests.fuzz.strategies import HEADER_TEXT, JSON_VALUES, assert_typed, encodable, encoded, mutated

NOW = 1_700_000_000_000
LIMITS: dict[str, Any] = {
    "now_ms": NOW,
    "reply_to": "natriton.v1.internal.replies.ingest-1",
    "max_payload_bytes": 64 * 1024,
    "default_timeout_ms": 10_000,
    "max_timeout_ms": 120_000,
    "max_top_k": 100,
}
CODEC: Codec[InferRequest] = Codec(InferRequest)
FRONT_DOOR_ERRORS = (ErrorCode.INVALID_ARGUMENT, ErrorCode.PAYLOAD_TOO_LARGE, ErrorCode.DEADLINE_EXCEEDED)

HEADERS = st.dictionaries(
    st.sampled_from([h.REQUEST_ID, h.TIMEOUT_MS, h.DEADLINE, h.CONTENT_TYPE, h.RESULTS_TO, "traceparent", "X-Other"]),
    HEADER_TEXT | st.integers(-(10**15), 10**15).map(str) | st.sampled_from([h.JSON, h.MSGPACK]),
)
TENSORS = st.builds(
    Tensor,
    name=st.text(max_size=8),
    datatype=st.sampled_from(["UINT8", "FP32", "INT64", "BOOL", "BYTES", ""]),
    shape=st.lists(st.integers(-2, 2**40), max_size=5).map(tuple),
    data=st.binary(max_size=64),
)
INPUTS = (
    st.builds(ImageInput, data=st.binary(max_size=256))
    | st.builds(TextInput, text=st.text(max_size=64))
    | st.builds(TensorInput, tensors=st.lists(TENSORS, max_size=3).map(tuple))
)
VALID_REQUESTS = st.builds(
    InferRequest,
    model=st.text(max_size=20),
    input=INPUTS,
    version=st.text(max_size=5),
    top_k=st.integers(-5, 200),
    use_cache=st.booleans(),
)


def check_admit(data: bytes, headers: dict[str, str]) -> Admitted | None:
    """``admit``, and the rules every admitted request keeps; None for a refusal (typed, checked)."""
    try:
        admitted = admit(data, headers, **LIMITS)
    except MeshError as exc:
        assert_typed(exc, *FRONT_DOOR_ERRORS)
        event(exc.code.value)
        given_id = headers.get(h.REQUEST_ID, "")
        if not given_id:
            assert re.fullmatch(r"[0-9a-f]{32}", exc.request_id)  # the id the mesh made for it
        elif is_valid_request_id(given_id):
            assert exc.request_id == given_id
        else:  # refused, never replaced: the error carries no id
            assert exc.code is ErrorCode.INVALID_ARGUMENT and exc.request_id == ""
        return None
    event("admitted")
    assert isinstance(admitted.request, InferRequest)
    assert 1 <= admitted.request.top_k <= LIMITS["max_top_k"]
    assert len(data) <= LIMITS["max_payload_bytes"]
    assert NOW < admitted.envelope.deadline_ms <= NOW + LIMITS["max_timeout_ms"]
    assert is_valid_request_id(admitted.request_id)
    if headers.get(h.REQUEST_ID):
        assert admitted.request_id == headers[h.REQUEST_ID]  # echoed untouched
    return admitted


@given(data=st.binary(max_size=2048), headers=HEADERS)
def test_arbitrary_bytes_and_headers(data: bytes, headers: dict[str, str]) -> None:
    check_admit(data, headers)


@given(value=JSON_VALUES, json=st.booleans(), tagged=st.booleans())
def test_arbitrary_structures(value: Any, json: bool, tagged: bool) -> None:
    """JSON-like values in both encodings, often with the right tag, so decoding gets past the first field."""
    if tagged and isinstance(value, dict):
        value = {"type": "infer_request", **value}
    check_admit(encoded(value, json=json), {h.CONTENT_TYPE: h.JSON} if json else {})


@given(request=VALID_REQUESTS, json=st.booleans(), extra=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3))
def test_valid_requests_with_unknown_fields_are_admitted_unchanged(
    request: InferRequest, json: bool, extra: dict[str, Any]
) -> None:
    body = encodable(request, lambda r: CODEC.encode(r, json=json))
    if body is None:
        return
    fields = msgspec.json.decode(body) if json else msgspec.msgpack.decode(body)
    extra = {k: v for k, v in extra.items() if k not in fields}
    body = encoded({**extra, **fields}, json=json)  # unknown fields first: skipped before the tag is read
    admitted = check_admit(body, {h.CONTENT_TYPE: h.JSON} if json else {})
    if 1 <= request.top_k <= LIMITS["max_top_k"] and len(body) <= LIMITS["max_payload_bytes"]:
        assert admitted is not None and admitted.request == request


@given(data=st.data(), json=st.booleans())
def test_mutated_valid_requests(data: st.DataObject, json: bool) -> None:
    request = data.draw(VALID_REQUESTS)
    body = encodable(request, lambda r: CODEC.encode(r, json=json))
    if body is None:
        return
    check_admit(data.draw(mutated(st.just(body), head=256)), {h.CONTENT_TYPE: h.JSON} if json else {})


@given(request_id=st.text(max_size=200), timeout=HEADER_TEXT, deadline=st.none() | HEADER_TEXT)
def test_header_rules(request_id: str, timeout: str, deadline: str | None) -> None:
    body = CODEC.encode(InferRequest(model="m", input=ImageInput(data=b"\xff\xd8")))
    headers = {h.REQUEST_ID: request_id, h.TIMEOUT_MS: timeout}
    if deadline is not None:
        headers[h.DEADLINE] = deadline
    check_admit(body, headers)
