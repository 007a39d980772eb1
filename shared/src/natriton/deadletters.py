"""Dead letters: where a JetStream message that cannot be processed ends, instead of being delivered forever.

A message taken from a stream (a camera frame) is settled by whoever answers it
(:func:`natriton.pipeline.reply_to_owner`). When the answer is a typed error, :func:`settle_failure` decides:

- a **permanent** error (:data:`PERMANENT_CODES`: the same message fails the same way again) puts it in dead letters at
  once and terminates it (``+TERM``): a poison message never loops;
- a **transient** error (``unavailable``, ``overloaded``) with deliveries left is not acknowledged but refused with a
  delay (``-NAK``): JetStream delivers it again and the owner keeps waiting for that delivery's answer; on the last
  delivery the consumer allows it goes to dead letters too;
- a consumer that delivers once (``max_deliver`` 1: real-time frames, worth only their freshness; their owner
  abandons stale ones and deletes their pixels) wants neither retries nor dead letters: the failure is answered and
  acknowledged.

A message nobody answers is delivered ``max_deliver`` times; then the server publishes the advisory
``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>``, and :func:`serve_max_deliveries` (one copy of a
service, in a queue group) reads the message by its stream sequence and stores it as a dead letter.

Every dead letter is one message of the stream ``NATRITON_DEAD_LETTERS`` on ``natriton.v1.deadletters.<stream>.<token>``
(the last token of the original subject: the camera of a frame), a JSON :class:`DeadLetter` with the original body,
headers, subject and stream sequence, the error, the delivery count, when and which consumer. Its ``Nats-Msg-Id`` is
the original stream and sequence, so two writers of the same dead letter (the advisory and a late failure) store it
once. A message is terminated (or, after max deliveries, deleted from its stream) only once its dead letter is
stored. ``natriton deadletters ls|show|replay`` reads and replays them.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, PubAck, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from natriton import headers as h
from natriton.errors import ErrorCode
from natriton.frames import ensure_stream
from natriton.runtime import Inbound, ServiceRuntime
from natriton.subjects import PREFIX, queue_group

log = logging.getLogger(__name__)

STREAM: Final = "NATRITON_DEAD_LETTERS"
SUBJECT_PREFIX: Final = f"{PREFIX}.deadletters"
DEFAULT_MAX_AGE_S: Final = 7 * 24 * 3600.0
MAX_BYTES: Final = 1 << 30
"""At most 1 GiB of dead letters (the oldest go first)."""
MSG_ID: Final = "Nats-Msg-Id"
MAX_DELIVERIES_ADVISORY: Final = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"

PERMANENT_CODES: Final = frozenset(
    {
        ErrorCode.INVALID_ARGUMENT,  # a malformed message or input: the same bytes fail again
        ErrorCode.NOT_FOUND,  # an unknown model, a frame whose pixels are gone
        ErrorCode.PAYLOAD_TOO_LARGE,
        ErrorCode.DEADLINE_EXCEEDED,  # the envelope's deadline is absolute: a later delivery is later still
        ErrorCode.INTERNAL,  # an unexpected exception: a bug the same message hits again
    }
)
"""Errors that another delivery of the same message cannot fix. The rest (``unavailable``, ``overloaded``) are
transient: the message is delivered again after a delay, up to the consumer's ``max_deliver``."""

RETRY_BASE_S: Final = 0.5
RETRY_MAX_S: Final = 10.0
MAX_DELIVER_TTL_S: Final = 60.0
"""How long a consumer's ``max_deliver`` is remembered before it is asked again."""


class Reason(enum.StrEnum):
    """Why a message is a dead letter."""

    PERMANENT = "permanent"
    """Its handler failed with a permanent error (:data:`PERMANENT_CODES`)."""
    RETRIES_EXHAUSTED = "retries_exhausted"
    """A transient error on the last delivery the consumer allows."""
    MAX_DELIVERIES = "max_deliveries"
    """Delivered ``max_deliver`` times and never answered (no copy acknowledged it within ``ack_wait``)."""


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """One dead message: stored as JSON (``data`` base64) in the stream ``NATRITON_DEAD_LETTERS``."""

    stream: str
    """The stream the message came from."""
    stream_seq: int
    """Its sequence there (with ``stream``, what identifies it: the dead letter's ``Nats-Msg-Id``)."""
    subject: str
    """Its original subject (where ``replay`` publishes it again)."""
    consumer: str
    """The consumer that delivered it."""
    deliveries: int
    """How many times it was delivered."""
    reason: Reason
    code: str
    """The error code (an ``ErrorCode`` value); '' for :attr:`Reason.MAX_DELIVERIES`."""
    message: str
    """The error message."""
    dead_at_ms: int
    """When it became a dead letter (Unix epoch milliseconds)."""
    published_ms: int = 0
    """When the stream stored it (0 if unknown)."""
    writer: str = ""
    """Which service copy wrote the dead letter."""
    headers: dict[str, str] = {}
    """The original headers."""
    data: bytes = b""
    """The original body."""


LETTERS: Final = msgspec.json.Decoder(DeadLetter)
_ENCODER: Final = msgspec.json.Encoder()


def encode(letter: DeadLetter) -> bytes:
    """A dead letter as stored (JSON)."""
    return _ENCODER.encode(letter)


def decode(data: bytes) -> DeadLetter:
    """A stored dead letter; :class:`msgspec.MsgspecError` when it is not one."""
    return LETTERS.decode(data)


# ------------------------------------------------------------------------------------------------ the stream
def subject_of(stream: str, subject: str) -> str:
    """Where the dead letter of a message of ``stream`` on ``subject`` goes: its last token (a frame's camera)."""
    token = subject.rsplit(".", 1)[-1] or "_"
    return f"{SUBJECT_PREFIX}.{stream}.{token}"


def message_id(stream: str, stream_seq: int) -> str:
    """The dead letter's ``Nats-Msg-Id``: one per original message, so it is stored once whoever writes it."""
    return f"{stream}.{stream_seq}"


def stream_config(replicas: int = 1, max_age_s: float = DEFAULT_MAX_AGE_S) -> StreamConfig:
    """The dead-letter stream: file storage, kept ``max_age_s`` (7 days) and at most 1 GiB."""
    return StreamConfig(
        name=STREAM,
        subjects=[f"{SUBJECT_PREFIX}.>"],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_age=max_age_s,
        max_bytes=MAX_BYTES,
        num_replicas=replicas,
    )


async def ensure_dead_letter_stream(
    js: JetStreamContext, replicas: int | None = None, max_age_s: float = DEFAULT_MAX_AGE_S
) -> None:
    """Create the dead-letter stream, or bring its configuration up to date (``replicas`` None: keep its own)."""
    await ensure_stream(js, stream_config(1, max_age_s), replicas)


async def store(js: JetStreamContext, letter: DeadLetter, *, timeout_s: float = 5.0) -> PubAck:
    """Store a dead letter (acknowledged by JetStream; a second copy of the same one is a duplicate, not stored)."""
    return await js.publish(
        subject_of(letter.stream, letter.subject),
        encode(letter),
        timeout=timeout_s,
        stream=STREAM,
        headers={MSG_ID: message_id(letter.stream, letter.stream_seq)},
    )


# ------------------------------------------------------------------------------------------------ pure decisions
@dataclass(frozen=True, slots=True)
class Delivery:
    """What a JetStream acknowledgement subject says about the delivery it belongs to."""

    stream: str
    consumer: str
    deliveries: int
    stream_seq: int
    consumer_seq: int
    published_ms: int


def parse_ack_subject(subject: str) -> Delivery | None:
    """Read ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>`` (or the form with
    domain and account hash in front); None when ``subject`` is no acknowledgement subject."""
    if not subject.startswith(h.JETSTREAM_ACK_PREFIX):
        return None
    tokens = subject.split(".")
    if len(tokens) == 9:
        first = 2
    elif len(tokens) >= 11:
        first = 4
    else:
        return None
    try:
        deliveries, stream_seq, consumer_seq, nanos = (int(t) for t in tokens[first + 2 : first + 6])
    except ValueError:
        return None
    return Delivery(tokens[first], tokens[first + 1], deliveries, stream_seq, consumer_seq, nanos // 1_000_000)


class Settlement(enum.Enum):
    """What becomes of a message whose handler failed."""

    RETRY = "retry"
    """Refused with a delay (``-NAK``): delivered again, and that delivery answers the owner."""
    DEAD = "dead"
    """Stored as a dead letter and terminated (``+TERM``); the owner gets the error."""
    ANSWERED = "answered"
    """Acknowledged with the error as its answer (a consumer that delivers once; no dead letter)."""


def is_permanent(code: ErrorCode | str) -> bool:
    """Whether another delivery cannot fix this error (unknown codes count as permanent)."""
    try:
        return ErrorCode(code) in PERMANENT_CODES
    except ValueError:
        return True


def disposition(code: ErrorCode | str, deliveries: int, max_deliver: int | None) -> tuple[Settlement, Reason | None]:
    """Decide for a failed delivery: ``max_deliver`` is the consumer's (-1 or None: no limit known)."""
    if max_deliver == 1:
        return Settlement.ANSWERED, None
    if is_permanent(code):
        return Settlement.DEAD, Reason.PERMANENT
    if max_deliver is not None and max_deliver > 0 and deliveries >= max_deliver:
        return Settlement.DEAD, Reason.RETRIES_EXHAUSTED
    return Settlement.RETRY, None


def retry_delay_s(deliveries: int, retry_after_ms: int | None = None) -> float:
    """How long JetStream waits before the next delivery: 0.5 s doubling per delivery, at least the error's own
    ``retry_after_ms``, at most 10 s."""
    backoff = RETRY_BASE_S * 2.0 ** max(0, deliveries - 1)
    hint = (retry_after_ms or 0) / 1000
    return float(min(RETRY_MAX_S, max(backoff, hint)))


def nak_payload(delay_s: float) -> bytes:
    """``-NAK`` with a delay (JetStream takes nanoseconds)."""
    return b'-NAK {"delay": %d}' % int(delay_s * 1e9)


TERM: Final = b"+TERM"
ACK: Final = b""


# ------------------------------------------------------------------------------------------------ settling
_max_deliver_cache: dict[tuple[str, str], tuple[float, int]] = {}


async def consumer_max_deliver(js: JetStreamContext, stream: str, consumer: str) -> int | None:
    """A consumer's ``max_deliver`` (remembered for a minute); None when it cannot be read."""
    key = (stream, consumer)
    cached = _max_deliver_cache.get(key)
    now = time.monotonic()
    if cached is not None and now - cached[0] < MAX_DELIVER_TTL_S:
        return cached[1]
    try:
        info = await js.consumer_info(stream, consumer, timeout=2.0)
    except (NatsError, TimeoutError, OSError) as exc:
        log.warning("cannot read max_deliver of %s/%s: %s", stream, consumer, type(exc).__name__)
        return None
    value = info.config.max_deliver if info.config.max_deliver is not None else -1
    _max_deliver_cache[key] = (now, value)
    return value


@dataclass(frozen=True, slots=True)
class Original:
    """A message as its stream holds it."""

    subject: str
    data: bytes
    headers: Mapping[str, str]
    published_ms: int = 0
    """When the stream stored it (0: unknown)."""


async def fetch_original(js: JetStreamContext, stream: str, stream_seq: int) -> Original | None:
    """The message at ``stream_seq`` of ``stream``; None when it is gone (acknowledged, deleted, aged out)."""
    try:
        raw = await js.get_msg(stream, stream_seq)
    except NotFoundError:
        return None
    published_ms = int(raw.time.timestamp() * 1000) if raw.time is not None else 0
    return Original(raw.subject or "", raw.data or b"", dict(raw.headers or {}), published_ms)


def letter_for(
    delivery: Delivery, original: Original, reason: Reason, code: str, message: str, writer: str = ""
) -> DeadLetter:
    """The dead letter of one delivery."""
    return DeadLetter(
        stream=delivery.stream,
        stream_seq=delivery.stream_seq,
        subject=original.subject,
        consumer=delivery.consumer,
        deliveries=delivery.deliveries,
        reason=reason,
        code=code,
        message=message,
        dead_at_ms=h.now_ms(),
        published_ms=delivery.published_ms or original.published_ms,
        writer=writer,
        headers=dict(original.headers),
        data=original.data,
    )


async def settle_failure(
    nc: NATS,
    ack_to: str,
    code: ErrorCode | str,
    message: str,
    *,
    retry_after_ms: int | None = None,
    original: Original | None = None,
    writer: str = "",
) -> Settlement:
    """Settle a stream message whose handling failed with ``code`` (see the module's rules): retry it, or store its
    dead letter and terminate it, or acknowledge it. ``original`` is the message when the caller took it from the
    stream itself; other hops leave it None and it is read from the stream by sequence.

    When the dead letter cannot be stored the message is retried instead (never terminated without one)."""
    delivery = parse_ack_subject(ack_to)
    if delivery is None:  # not a JetStream delivery we can read: acknowledge, as any answer does
        await nc.publish(ack_to, ACK)
        return Settlement.ANSWERED
    js = nc.jetstream()
    max_deliver = await consumer_max_deliver(js, delivery.stream, delivery.consumer)
    settlement, reason = disposition(code, delivery.deliveries, max_deliver)
    if settlement is Settlement.RETRY:
        await nc.publish(ack_to, nak_payload(retry_delay_s(delivery.deliveries, retry_after_ms)))
        return settlement
    if reason is None:  # Settlement.ANSWERED
        await nc.publish(ack_to, ACK)
        return Settlement.ANSWERED
    try:
        if original is None:
            original = await fetch_original(js, delivery.stream, delivery.stream_seq)
        if original is None:  # gone already (another delivery was answered): nothing left to keep
            await nc.publish(ack_to, TERM)
            return Settlement.ANSWERED
        letter = letter_for(delivery, original, reason, str(code), message, writer)
        await store(js, letter)
    except (NatsError, TimeoutError, OSError) as exc:
        where = f"{delivery.stream} #{delivery.stream_seq}"
        log.warning("cannot store the dead letter of %s (%s); delivering it again", where, type(exc).__name__)
        await nc.publish(ack_to, nak_payload(RETRY_MAX_S))
        return Settlement.RETRY
    where = f"{delivery.stream} #{delivery.stream_seq}"
    log.warning("dead letter: %s (%s after %d deliveries): %s: %s", where, reason, delivery.deliveries, code, message)
    await nc.publish(ack_to, TERM)
    return Settlement.DEAD


def original_of(inbound: Inbound) -> Original:
    """A message as the handler that took it from its stream received it."""
    return Original(subject=inbound.subject, data=inbound.data, headers=inbound.headers)


# ------------------------------------------------------------------------------------------------ max deliveries
class MaxDeliveriesAdvisory(msgspec.Struct, frozen=True, kw_only=True):
    """``io.nats.jetstream.advisory.v1.max_deliver``: a message was delivered ``deliveries`` times, unanswered."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int


ADVISORIES: Final = msgspec.json.Decoder(MaxDeliveriesAdvisory)


def max_deliveries_subject(stream: str, consumer: str) -> str:
    """The advisory subject of one consumer."""
    return f"{MAX_DELIVERIES_ADVISORY}.{stream}.{consumer}"


async def dead_letter_unanswered(
    js: JetStreamContext, advisory: MaxDeliveriesAdvisory, *, remove_original: bool, writer: str = ""
) -> bool:
    """Store the dead letter of a message delivered ``max_deliver`` times without an answer, then (``remove_original``:
    a work queue, where it would otherwise stay) delete it from its stream. False when it is gone already."""
    original = await fetch_original(js, advisory.stream, advisory.stream_seq)
    if original is None:
        return False
    delivery = Delivery(advisory.stream, advisory.consumer, advisory.deliveries, advisory.stream_seq, 0, 0)
    message = f"delivered {advisory.deliveries} times without an answer"
    await store(js, letter_for(delivery, original, Reason.MAX_DELIVERIES, "", message, writer))
    log.warning("dead letter: %s #%d: %s", advisory.stream, advisory.stream_seq, message)
    if remove_original:
        with contextlib.suppress(NotFoundError):
            await js.delete_msg(advisory.stream, advisory.stream_seq)
    return True


async def serve_max_deliveries(
    runtime: ServiceRuntime, stream: str, consumer: str, *, remove_original: bool = True
) -> None:
    """Turn ``consumer``'s max-deliveries advisories into dead letters, in the service's queue group (one copy
    handles each), as the endpoint ``max_deliveries_<consumer>``.

    Advisories are plain NATS messages: one emitted while no copy is connected is not seen again, and its message
    stays in the stream (until the stream's ``max_age``) without a dead letter."""
    js = runtime.nc.jetstream()

    async def handle(inbound: Inbound) -> None:
        try:
            advisory = ADVISORIES.decode(inbound.data)
        except msgspec.MsgspecError:
            log.warning("ignoring a malformed advisory on %s", inbound.subject)
            return
        await dead_letter_unanswered(js, advisory, remove_original=remove_original, writer=runtime.instance_id)

    await runtime.add_endpoint(
        f"max_deliveries_{consumer}",
        max_deliveries_subject(stream, consumer),
        handle,
        queue_group=queue_group(runtime.name),
        traced=False,
    )


# ------------------------------------------------------------------------------------------------ replay
REPLAY_DROPPED_HEADERS: Final = frozenset(
    {
        MSG_ID,
        "Nats-Expected-Stream",
        "Nats-Expected-Last-Sequence",
        "Nats-Expected-Last-Subject-Sequence",
        "Nats-Expected-Last-Msg-Id",
    }
)
"""Headers of the original that must not go out again (its id would be dropped as a duplicate)."""


def replay_headers(letter: DeadLetter, dead_letter_seq: int, *, deadline_s: float) -> dict[str, str]:
    """The headers a replayed message is published with: the original's, a new ``Nats-Msg-Id`` (one per dead
    letter, so replaying it twice within the stream's duplicate window publishes it once) and, when it carries a
    Natriton deadline, a fresh one ``deadline_s`` from now (the old one has passed)."""
    out = {k: v for k, v in letter.headers.items() if k not in REPLAY_DROPPED_HEADERS}
    out[MSG_ID] = f"replay.{STREAM}.{dead_letter_seq}"
    if h.DEADLINE in out:
        out[h.DEADLINE] = str(h.now_ms() + int(deadline_s * 1000))
    return out


async def replay(
    js: JetStreamContext, dead_letter_seq: int, *, delete: bool = False, deadline_s: float = 60.0
) -> tuple[DeadLetter, PubAck]:
    """Publish dead letter ``dead_letter_seq``'s message again to its original subject and stream (then, with
    ``delete``, remove the dead letter). :class:`NotFoundError` when there is no such dead letter."""
    raw = await js.get_msg(STREAM, dead_letter_seq)
    letter = decode(raw.data or b"")
    headers = replay_headers(letter, dead_letter_seq, deadline_s=deadline_s)
    ack = await js.publish(letter.subject, letter.data, stream=letter.stream, headers=headers)
    if delete:
        await js.delete_msg(STREAM, dead_letter_seq)
    return letter, ack
