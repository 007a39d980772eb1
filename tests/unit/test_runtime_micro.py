"""The runtime's NATS micro v1 answers and truthful endpoint numbers, without a server (a fake connection).

The responses are checked three ways: against JSON Schemas written from the NATS micro v1 spec (the
``io.nats.micro.v1.*_response`` types), by nats-py's own parsers (``nats.micro.service``), and by value.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jsonschema
import pytest
from nats.aio.msg import Msg
from nats.micro.service import ServiceInfo, ServicePing, ServiceStats

from natriton.errors import ErrorCode, MeshError
from natriton.runtime import (
    INFO_RESPONSE_TYPE,
    PING_RESPONSE_TYPE,
    STATS_RESPONSE_TYPE,
    EndpointCounters,
    Inbound,
    MicroIdentity,
    ServiceRuntime,
    endpoint_info,
    info_response,
    micro_control_subjects,
    micro_time,
    ping_response,
    stats_response,
)
from natriton.settings import CommonSettings

# ------------------------------------------------------------------------------------------------ schemas
_NAME = {"type": "string", "pattern": "^[A-Za-z0-9_-]+$", "minLength": 1}
_SEMVER = {"type": "string", "pattern": r"^\d+\.\d+\.\d+"}
_METADATA = {"type": ["object", "null"], "additionalProperties": {"type": "string"}}
_INT = {"type": "integer", "minimum": 0}


def _response(type_: str, required: list[str], **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "name", "id", "version", *required],
        "properties": {
            "type": {"const": type_},
            "name": _NAME,
            "id": {"type": "string", "minLength": 1},
            "version": _SEMVER,
            "metadata": _METADATA,
            **properties,
        },
    }


PING_SCHEMA = _response(PING_RESPONSE_TYPE, [])
INFO_SCHEMA = _response(
    INFO_RESPONSE_TYPE,
    ["description", "endpoints"],
    description={"type": "string"},
    endpoints={
        "type": "array",
        "items": {
            "type": "object",
            "required": ["name", "subject", "queue_group", "metadata"],
            "properties": {
                "name": _NAME,
                "subject": {"type": "string", "minLength": 1},
                "queue_group": {"type": "string"},
                "metadata": _METADATA,
            },
        },
    },
)
STATS_SCHEMA = _response(
    STATS_RESPONSE_TYPE,
    ["started", "endpoints"],
    started={"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$"},
    endpoints={
        "type": "array",
        "items": {
            "type": "object",
            "required": [
                "name",
                "subject",
                "queue_group",
                "num_requests",
                "num_errors",
                "last_error",
                "processing_time",
                "average_processing_time",
                "data",
            ],
            "properties": {
                "name": _NAME,
                "subject": {"type": "string", "minLength": 1},
                "queue_group": {"type": "string"},
                "num_requests": _INT,
                "num_errors": _INT,
                "last_error": {"type": "string"},
                "processing_time": _INT,
                "average_processing_time": _INT,
            },
        },
    },
)

IDENTITY = MicroIdentity(
    name="natriton-demo", id="ABC123", version="0.1.0", description="Demo", metadata={"instance_id": "copy-1"}
)


def roundtrip(response: dict[str, Any]) -> dict[str, Any]:
    """What a client decodes: the runtime sends ``json.dumps(response)``."""
    decoded: dict[str, Any] = json.loads(json.dumps(response))
    return decoded


# ------------------------------------------------------------------------------------------------ pure pieces
def test_control_subjects_cover_all_named_and_this_copy() -> None:
    assert micro_control_subjects("PING", "natriton-router", "X1") == (
        "$SRV.PING",
        "$SRV.PING.natriton-router",
        "$SRV.PING.natriton-router.X1",
    )


def test_micro_time_is_rfc3339_utc_that_nats_py_parses() -> None:
    moment = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=timezone(timedelta(hours=2)))
    text = micro_time(moment)
    assert text == "2025-03-04T03:06:07.890123Z"
    assert datetime.fromisoformat(text) == moment
    assert datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ") == moment.astimezone(UTC).replace(tzinfo=None)


@pytest.mark.parametrize(
    ("name", "version"), [("natriton router", "0.1.0"), ("natriton.router", "0.1.0"), ("ok", "1.0"), ("ok", "")]
)
def test_identity_refuses_what_nats_micro_refuses(name: str, version: str) -> None:
    with pytest.raises(ValueError):
        MicroIdentity(name=name, id="x", version=version, description="", metadata={})


def test_ping_response() -> None:
    ping = roundtrip(ping_response(IDENTITY))
    jsonschema.validate(ping, PING_SCHEMA)
    assert ping == {
        "type": PING_RESPONSE_TYPE,
        "name": "natriton-demo",
        "id": "ABC123",
        "version": "0.1.0",
        "metadata": {"instance_id": "copy-1"},
    }
    assert ServicePing.from_dict(ping).to_dict() == ping


def test_info_response() -> None:
    info = roundtrip(info_response(IDENTITY, [endpoint_info("infer", "natriton.v1.infer", "natriton.ingest")]))
    jsonschema.validate(info, INFO_SCHEMA)
    parsed = ServiceInfo.from_dict(info)
    assert parsed.description == "Demo"
    assert parsed.metadata == {"instance_id": "copy-1"}
    assert [(e.name, e.subject, e.queue_group, e.metadata) for e in parsed.endpoints] == [
        ("infer", "natriton.v1.infer", "natriton.ingest", {})
    ]


def test_stats_response_numbers_are_the_handlers_own() -> None:
    counters = EndpointCounters(received=10, succeeded=6, failed=2, rejected=1, in_flight=1, busy_ns=8_000_000)
    counters.errors_by_code = {"not_found": 2}
    counters.last_error = "not_found: nope"
    endpoint = counters.micro_stats("infer", "natriton.v1.infer", "natriton.ingest", app={"cache_hits": 3})
    started = datetime(2025, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    stats = roundtrip(stats_response(IDENTITY, started, [endpoint]))
    jsonschema.validate(stats, STATS_SCHEMA)
    (only,) = stats["endpoints"]
    assert only["num_requests"] == 10  # every message taken, rejected ones included
    assert only["num_errors"] == 3  # failed + rejected: answered with an error
    assert only["last_error"] == "not_found: nope"
    assert only["processing_time"] == 8_000_000
    assert only["average_processing_time"] == 1_000_000  # over the 8 that finished
    assert only["data"] == {**counters.as_dict(), "app": {"cache_hits": 3}}
    parsed = ServiceStats.from_dict(stats)
    assert parsed.started == datetime(2025, 1, 2, 3, 4, 5, 600000)
    assert parsed.endpoints[0].num_errors == 3


def test_stats_of_an_idle_endpoint() -> None:
    endpoint = EndpointCounters().micro_stats("e", "s", "q")
    assert (endpoint["num_requests"], endpoint["num_errors"], endpoint["last_error"]) == (0, 0, "")
    assert (endpoint["processing_time"], endpoint["average_processing_time"]) == (0, 0)
    assert "app" not in endpoint["data"]


# ------------------------------------------------------------------------------------------------ a fake NATS
class FakeSubscription:
    def __init__(self, subject: str, queue: str, cb: Callable[[Msg], Awaitable[None]]) -> None:
        self.subject, self.queue, self.cb = subject, queue, cb
        self.drained = False

    async def drain(self) -> None:
        self.drained = True


class FakeConnection:
    """Just what ServiceRuntime uses after connect(): subscribe, publish, flush, drain."""

    def __init__(self) -> None:
        self.subscriptions: list[FakeSubscription] = []
        self.published: list[tuple[str, bytes]] = []
        self.is_closed = False
        self.drained = False

    async def subscribe(self, subject: str, queue: str = "", cb: Any = None, **_: Any) -> FakeSubscription:
        sub = FakeSubscription(subject, queue, cb)
        self.subscriptions.append(sub)
        return sub

    async def publish(self, subject: str, payload: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.published.append((subject, payload))

    async def flush(self) -> None:
        pass

    async def drain(self) -> None:
        self.drained = True
        self.is_closed = True

    def deliver(self, subject: str, data: bytes = b"", reply: str = "") -> Awaitable[None]:
        """Hand a message to the (first) subscription of ``subject``, as nats-py's delivery task would."""
        sub = next(s for s in self.subscriptions if s.subject == subject)
        return sub.cb(Msg(_client=None, subject=subject, reply=reply, data=data))  # type: ignore[arg-type]


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> tuple[ServiceRuntime, FakeConnection]:
    fake = FakeConnection()

    async def connect(**_: Any) -> FakeConnection:
        return fake

    monkeypatch.setattr("natriton.runtime.nats.connect", connect)
    settings = CommonSettings(instance_id="copy-1", max_concurrency=2, drain_timeout_s=2.0)
    return ServiceRuntime("demo", "0.1.0", settings), fake


async def test_connect_answers_every_verb_on_all_three_subjects(runtime: tuple[ServiceRuntime, FakeConnection]) -> None:
    rt, fake = runtime
    await rt.connect()
    subjects = {s.subject for s in fake.subscriptions}
    for verb in ("PING", "INFO", "STATS"):
        assert set(micro_control_subjects(verb, "natriton-demo", rt.micro.id)) <= subjects
    await fake.deliver(f"$SRV.PING.natriton-demo.{rt.micro.id}", reply="_INBOX.1")
    await fake.deliver("$SRV.INFO", reply="_INBOX.2")
    await fake.deliver("$SRV.STATS.natriton-demo", reply="_INBOX.3")
    await fake.deliver("$SRV.PING")  # no reply subject: nothing to answer
    answers = {subject: json.loads(payload) for subject, payload in fake.published}
    assert list(answers) == ["_INBOX.1", "_INBOX.2", "_INBOX.3"]
    jsonschema.validate(answers["_INBOX.1"], PING_SCHEMA)
    jsonschema.validate(answers["_INBOX.2"], INFO_SCHEMA)
    jsonschema.validate(answers["_INBOX.3"], STATS_SCHEMA)
    assert answers["_INBOX.1"]["metadata"] == {"instance_id": "copy-1"}


async def test_endpoint_numbers_are_truthful(runtime: tuple[ServiceRuntime, FakeConnection]) -> None:
    rt, fake = runtime
    await rt.connect()
    release = asyncio.Event()
    overloads: list[bytes] = []

    async def handler(inbound: Inbound) -> None:
        await release.wait()
        await asyncio.sleep(0.02)
        if inbound.data == b"bad":
            raise MeshError(ErrorCode.NOT_FOUND, "no such model")
        if inbound.data == b"boom":
            raise RuntimeError("bug")

    async def on_overload(inbound: Inbound) -> None:
        overloads.append(inbound.data)

    await rt.add_endpoint("work", "demo.work", handler, queue_group="q.demo", on_overload=on_overload)
    (sub,) = [s for s in fake.subscriptions if s.subject == "demo.work"]
    assert sub.queue == "q.demo"
    # dispatch returns at once: the handler runs in a task (max_concurrency=2 slots)
    await fake.deliver("demo.work", b"bad")
    await fake.deliver("demo.work", b"ok")
    await fake.deliver("demo.work", b"late")  # both slots busy: rejected at once
    assert overloads == [b"late"]
    stats = rt.micro_stats()["endpoints"][0]
    assert (stats["num_requests"], stats["num_errors"], stats["data"]["in_flight"]) == (3, 1, 2)
    assert stats["last_error"] == "overloaded: all 2 slots busy"
    release.set()
    await asyncio.gather(*list(rt._tasks))
    await fake.deliver("demo.work", b"boom")
    await asyncio.gather(*list(rt._tasks))
    rt.stats_extension = lambda: {"hits": 1}
    stats = rt.micro_stats()["endpoints"][0]
    assert (stats["num_requests"], stats["num_errors"]) == (4, 3)
    assert stats["last_error"] == "internal: demo: RuntimeError"
    assert stats["data"]["succeeded"] == 1 and stats["data"]["failed"] == 2
    # the handlers' own time: three finished, each slept >= 20 ms
    assert stats["processing_time"] >= 3 * 20_000_000
    assert stats["average_processing_time"] == stats["processing_time"] // 3
    assert stats["data"]["app"] == {"hits": 1}
    assert rt.stats()["work"] == {k: v for k, v in stats["data"].items() if k != "app"}
    info = rt.micro_info()
    assert info["endpoints"] == [{"name": "work", "subject": "demo.work", "queue_group": "q.demo", "metadata": {}}]


async def test_a_failing_stats_extension_does_not_break_stats(runtime: tuple[ServiceRuntime, FakeConnection]) -> None:
    rt, _ = runtime
    await rt.connect()

    async def handler(inbound: Inbound) -> None:
        pass

    await rt.add_endpoint("a", "demo.a", handler, queue_group="q")
    await rt.add_endpoint("b", "demo.b", handler, queue_group="q")

    def broken() -> dict[str, Any]:
        raise KeyError("x")

    rt.stats_extension = broken
    stats = rt.micro_stats()
    assert [e["data"]["app"] for e in stats["endpoints"]] == [{"error": "KeyError"}, {"error": "KeyError"}]


@pytest.mark.parametrize("name", ["bad name", "bad.name", ""])
async def test_endpoint_names_follow_nats_micro(runtime: tuple[ServiceRuntime, FakeConnection], name: str) -> None:
    rt, _ = runtime
    await rt.connect()

    async def handler(inbound: Inbound) -> None:
        pass

    with pytest.raises(ValueError):
        await rt.add_endpoint(name, "demo.x", handler, queue_group="q")


async def test_drain_stops_taking_messages_and_finishes_accepted_work(
    runtime: tuple[ServiceRuntime, FakeConnection],
) -> None:
    rt, fake = runtime
    await rt.connect()
    finished: list[bytes] = []

    async def handler(inbound: Inbound) -> None:
        await asyncio.sleep(0.05)
        finished.append(inbound.data)

    await rt.add_endpoint("work", "demo.work", handler, queue_group="q")
    await fake.deliver("demo.work", b"1")
    await fake.deliver("demo.work", b"2")
    await rt.drain()
    (sub,) = [s for s in fake.subscriptions if s.subject == "demo.work"]
    assert sub.drained
    assert sorted(finished) == [b"1", b"2"]
    assert fake.drained  # then $SRV and the rest, and the connection closes


async def test_drain_cancels_work_past_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeConnection()

    async def connect(**_: Any) -> FakeConnection:
        return fake

    monkeypatch.setattr("natriton.runtime.nats.connect", connect)
    rt = ServiceRuntime("demo", "0.1.0", CommonSettings(instance_id="c", drain_timeout_s=0.05))
    await rt.connect()
    cancelled = asyncio.Event()

    async def handler(inbound: Inbound) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await rt.add_endpoint("work", "demo.work", handler, queue_group="q")
    await fake.deliver("demo.work", b"slow")
    await rt.drain()
    await asyncio.sleep(0)
    assert cancelled.is_set()
