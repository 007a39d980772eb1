"""Dead letters, the pure parts: reading acknowledgement subjects, what a failure becomes, the stored form, replay
headers, the stream configuration and preprocess's settings for them."""

from __future__ import annotations

import json

import pytest
from nats.js.api import RetentionPolicy, StorageType

from natriton import deadletters as dl
from natriton.errors import ErrorCode
from natriton.headers import DEADLINE, MESH_ID, now_ms
from natriton.settings import SettingsError, load_settings
from natriton_preprocess.settings import Settings as PreprocessSettings

V1 = "$JS.ACK.NATRITON_FRAMES_RELIABLE.preprocess_reliable.3.42.57.1796082303465610119.12"
V2 = "$JS.ACK.hub.ACCHASH.NATRITON_FRAMES_RELIABLE.preprocess_reliable.3.42.57.1796082303465610119.12.rnd"


@pytest.mark.parametrize("subject", [V1, V2, V2.removesuffix(".rnd")])
def test_an_acknowledgement_subject_names_stream_consumer_deliveries_and_sequence(subject: str) -> None:
    delivery = dl.parse_ack_subject(subject)
    assert delivery == dl.Delivery(
        stream="NATRITON_FRAMES_RELIABLE",
        consumer="preprocess_reliable",
        deliveries=3,
        stream_seq=42,
        consumer_seq=57,
        published_ms=1796082303465,
    )


@pytest.mark.parametrize(
    "subject", ["", "_INBOX.abc", "$JS.ACK.S.C.1.2", "$JS.ACK.S.C.x.2.3.4.5", "natriton.v1.internal.replies.a"]
)
def test_anything_else_is_no_delivery(subject: str) -> None:
    assert dl.parse_ack_subject(subject) is None


def test_every_error_code_is_either_permanent_or_transient() -> None:
    transient = {code for code in ErrorCode if not dl.is_permanent(code)}
    assert transient == {ErrorCode.UNAVAILABLE, ErrorCode.OVERLOADED}
    assert dl.is_permanent("something_new")  # an unknown code is not retried forever


@pytest.mark.parametrize(
    ("code", "deliveries", "max_deliver", "expected"),
    [
        # a poison message dies on its first delivery, whatever the consumer allows
        (ErrorCode.INVALID_ARGUMENT, 1, 5, (dl.Settlement.DEAD, dl.Reason.PERMANENT)),
        (ErrorCode.NOT_FOUND, 1, None, (dl.Settlement.DEAD, dl.Reason.PERMANENT)),
        (ErrorCode.DEADLINE_EXCEEDED, 2, 5, (dl.Settlement.DEAD, dl.Reason.PERMANENT)),
        (ErrorCode.INTERNAL, 1, -1, (dl.Settlement.DEAD, dl.Reason.PERMANENT)),
        # transient: delivered again while deliveries are left, dead on the last one
        (ErrorCode.UNAVAILABLE, 1, 5, (dl.Settlement.RETRY, None)),
        (ErrorCode.OVERLOADED, 4, 5, (dl.Settlement.RETRY, None)),
        (ErrorCode.UNAVAILABLE, 5, 5, (dl.Settlement.DEAD, dl.Reason.RETRIES_EXHAUSTED)),
        (ErrorCode.UNAVAILABLE, 7, 5, (dl.Settlement.DEAD, dl.Reason.RETRIES_EXHAUSTED)),
        # no limit (or unknown): always again (the max-deliveries advisory is the backstop)
        (ErrorCode.UNAVAILABLE, 50, -1, (dl.Settlement.RETRY, None)),
        (ErrorCode.UNAVAILABLE, 50, None, (dl.Settlement.RETRY, None)),
        # a consumer that delivers once (real time): the failure is the answer, no dead letter
        (ErrorCode.OVERLOADED, 1, 1, (dl.Settlement.ANSWERED, None)),
        (ErrorCode.NOT_FOUND, 1, 1, (dl.Settlement.ANSWERED, None)),
    ],
)
def test_what_a_failed_delivery_becomes(
    code: ErrorCode, deliveries: int, max_deliver: int | None, expected: tuple[dl.Settlement, dl.Reason | None]
) -> None:
    assert dl.disposition(code, deliveries, max_deliver) == expected


def test_redeliveries_back_off_and_honour_the_errors_hint() -> None:
    delays = [dl.retry_delay_s(n) for n in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert dl.retry_delay_s(1, retry_after_ms=3000) == 3.0
    assert dl.retry_delay_s(3, retry_after_ms=100) == 2.0
    assert dl.retry_delay_s(1, retry_after_ms=60_000) == dl.RETRY_MAX_S
    assert dl.nak_payload(1.5) == b'-NAK {"delay": 1500000000}'
    assert json.loads(dl.nak_payload(0.25).removeprefix(b"-NAK ")) == {"delay": 250_000_000}


def test_a_dead_letter_is_readable_json_and_keeps_the_body_byte_for_byte() -> None:
    body = bytes(range(256))
    letter = dl.DeadLetter(
        stream="S",
        stream_seq=7,
        subject="natriton.v1.frames.reliable.cam-1",
        consumer="preprocess_reliable",
        deliveries=2,
        reason=dl.Reason.PERMANENT,
        code="not_found",
        message="the frame has expired",
        dead_at_ms=1,
        headers={MESH_ID: "m1"},
        data=body,
    )
    stored = dl.encode(letter)
    document = json.loads(stored)
    assert document["reason"] == "permanent" and document["code"] == "not_found" and document["deliveries"] == 2
    assert dl.decode(stored) == letter and dl.decode(stored).data == body


def test_dead_letters_are_filed_by_stream_and_camera_with_one_id_per_original() -> None:
    assert dl.subject_of("NATRITON_FRAMES_RELIABLE", "natriton.v1.frames.reliable.lobby") == (
        "natriton.v1.deadletters.NATRITON_FRAMES_RELIABLE.lobby"
    )
    assert dl.subject_of("T", "plain") == "natriton.v1.deadletters.T.plain"
    assert dl.message_id("S", 7) == dl.message_id("S", 7) != dl.message_id("S", 8)
    config = dl.stream_config(replicas=3, max_age_s=60)
    assert config.subjects == ["natriton.v1.deadletters.>"] and config.num_replicas == 3 and config.max_age == 60
    assert config.storage is StorageType.FILE and config.retention is RetentionPolicy.LIMITS
    assert dl.stream_config().max_age == 7 * 24 * 3600


def test_a_replay_gets_a_new_id_and_a_fresh_deadline_and_keeps_the_rest() -> None:
    letter = dl.DeadLetter(
        stream="S", stream_seq=1, subject="s.x", consumer="c", deliveries=1, reason=dl.Reason.MAX_DELIVERIES,
        code="", message="", dead_at_ms=0,
        headers={"Nats-Msg-Id": "orig", "Nats-Expected-Stream": "S", DEADLINE: "1", MESH_ID: "m", "traceparent": "t"},
    )  # fmt: skip
    headers = dl.replay_headers(letter, 12, deadline_s=30)
    assert headers["Nats-Msg-Id"] == "replay.NATRITON_DEAD_LETTERS.12" != "orig"
    assert "Nats-Expected-Stream" not in headers
    assert headers[MESH_ID] == "m" and headers["traceparent"] == "t"
    assert abs(int(headers[DEADLINE]) - (now_ms() + 30_000)) < 2_000
    no_deadline = dl.replay_headers(dl.DeadLetter(**{**_fields(letter), "headers": {}}), 3, deadline_s=30)
    assert no_deadline == {"Nats-Msg-Id": "replay.NATRITON_DEAD_LETTERS.3"}


def _fields(letter: dl.DeadLetter) -> dict[str, object]:
    return {name: getattr(letter, name) for name in letter.__struct_fields__}


def test_preprocess_settings_for_durable_streams() -> None:
    settings = load_settings(PreprocessSettings, {})
    assert (settings.reliable_max_deliver, settings.stream_replicas) == (5, 1)
    assert settings.dead_letter_max_age_s == 7 * 24 * 3600
    env = {"NATRITON_RELIABLE_MAX_DELIVER": "3", "NATRITON_STREAM_REPLICAS": "3"}
    assert load_settings(PreprocessSettings, env).stream_replicas == 3
    for bad in ({"NATRITON_RELIABLE_MAX_DELIVER": "1"}, {"NATRITON_STREAM_REPLICAS": "7"},
                {"NATRITON_STREAM_REPLICAS": "0"}, {"NATRITON_DEAD_LETTER_MAX_AGE_S": "0"}):  # fmt: skip
        with pytest.raises(SettingsError):
            load_settings(PreprocessSettings, bad)
