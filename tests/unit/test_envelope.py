"""The request envelope: parsed once per hop, written once, one form of the deadline."""

from __future__ import annotations

import time

import pytest

from natriton import headers as h
from natriton.envelope import Envelope
from natriton.errors import ErrorCode, MeshError

ENVELOPE = Envelope(mesh_id="m1", request_id="cam-1-frame-7", deadline_ms=1_900_000_000_000, reply_to="r.subj")


def test_round_trip_through_headers() -> None:
    headers = ENVELOPE.to_headers()
    assert headers == {
        h.MESH_ID: "m1",
        h.REQUEST_ID: "cam-1-frame-7",
        h.DEADLINE: "1900000000000",
        h.REPLY_TO: "r.subj",
    }
    assert Envelope.from_headers({**headers, "traceparent": "00-x"}) == ENVELOPE


@pytest.mark.parametrize("missing", [h.MESH_ID, h.DEADLINE, h.REPLY_TO])
def test_a_hop_without_a_complete_envelope_is_refused(missing: str) -> None:
    headers = ENVELOPE.to_headers()
    del headers[missing]
    with pytest.raises(MeshError) as raised:
        Envelope.from_headers(headers)
    assert raised.value.code is ErrorCode.INVALID_ARGUMENT


def test_a_malformed_deadline_is_refused() -> None:
    with pytest.raises(MeshError):
        Envelope.from_headers({**ENVELOPE.to_headers(), h.DEADLINE: "soon"})


def test_the_producer_id_may_be_absent() -> None:
    headers = ENVELOPE.to_headers()
    del headers[h.REQUEST_ID]
    assert Envelope.from_headers(headers).request_id == ""


def test_deadline_checks() -> None:
    now_ms = int(time.time() * 1000)
    future = Envelope(mesh_id="m", request_id="", deadline_ms=now_ms + 5_000, reply_to="r")
    future.check_deadline("preprocess")
    assert 4.0 < future.remaining_s() <= 5.0
    past = Envelope(mesh_id="m", request_id="", deadline_ms=now_ms - 50, reply_to="r")
    assert past.remaining_s() == 0.0
    with pytest.raises(MeshError) as raised:
        past.check_deadline("routing")
    assert raised.value.code is ErrorCode.DEADLINE_EXCEEDED
    assert "before routing" in raised.value.message


def test_an_internal_message_nested_too_deeply_is_invalid_argument() -> None:
    """msgspec recurses into unknown fields too: a hostile nesting is a typed error for its owner, not ``internal``."""
    from natriton.messages import Codec, InferTask
    from natriton.pipeline import decode_task
    from natriton.runtime import Inbound

    envelope = Envelope(mesh_id="m-1", request_id="r", deadline_ms=h.now_ms() + 10_000, reply_to="natriton.x")
    deep = b"\x82\xa4type\xaainfer_task\xa4junk" + b"\x91" * 5000 + b"\xc0"
    inbound = Inbound(subject="natriton.v1.internal.route", data=deep, headers=envelope.to_headers(), reply="")
    with pytest.raises(MeshError) as caught:
        decode_task(Codec(InferTask), inbound)
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT and "nested too deeply" in caught.value.message
