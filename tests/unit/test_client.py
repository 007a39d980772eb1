"""The slim client's logic without a server: error mapping, retry schedule, headers, deadlines, reply decoding,
trace context, the retry loop and ``infer_many`` on a stub connection, and the package's import graph."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats.errors
import pytest

import natriton_client
from natriton_client import (
    NO_RETRY,
    AsyncClient,
    Classification,
    ClassScore,
    ConnectionFailed,
    DeadlineExceeded,
    ErrorCode,
    ErrorReply,
    InferCall,
    InferRequest,
    InferResponse,
    Internal,
    InvalidArgument,
    NatritonError,
    NoReply,
    NoResponders,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RetryPolicy,
    Tensor,
    TextInput,
    Unavailable,
)
from natriton_client import aio as aio_module
from natriton_client._wire import (
    REPLY_CODEC,
    REQUEST_CODEC,
    Deadline,
    check_request_id,
    check_results_to,
    content_is_json,
    current_trace_headers,
    decode_reply,
    make_request,
    new_results_subject,
    request_headers,
    trace_headers,
)
from natriton_client.errors import ERROR_CLASSES, code_from_status, error_class, error_from_reply
from natriton_client.protocol import JSON, MSGPACK, Header
from natriton_client.retry import retry_delay_s
from natriton_client.sync import _LoopThread

RESPONSE = InferResponse(
    request_id="r-1",
    model="mobilenet_v2",
    version="1",
    result=Classification(classes=(ClassScore(index=967, label="espresso", score=0.99),)),
)


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------
def test_every_error_code_has_its_own_exception_class() -> None:
    assert set(ERROR_CLASSES) == set(ErrorCode)
    assert len(set(ERROR_CLASSES.values())) == len(ErrorCode)
    for code, cls in ERROR_CLASSES.items():
        assert issubclass(cls, NatritonError)
        assert cls.default_code is code
        assert error_class(code) is cls
        assert cls("m").code is code


@pytest.mark.parametrize("code", list(ErrorCode))
def test_error_from_reply_keeps_everything(code: ErrorCode) -> None:
    reply = ErrorReply(request_id="r-7", code=code, message="boom", retry_after_ms=250)
    err = error_from_reply(reply, attempts=2)
    assert type(err) is ERROR_CLASSES[code]
    assert (err.code, err.message, err.request_id, err.retry_after_ms, err.reply) == (code, "boom", "r-7", 250, reply)
    assert err.attempts == 2 and err.retryable is code.retryable and not err.client_side
    assert str(err) == f"{code.value}: boom [request r-7]"


def test_client_side_errors_sit_in_the_same_hierarchy() -> None:
    assert issubclass(NoResponders, Unavailable) and NoResponders("x").code is ErrorCode.UNAVAILABLE
    assert NoResponders("x").retryable and NoResponders("x").client_side
    assert issubclass(NoReply, DeadlineExceeded) and issubclass(NoReply, TimeoutError)
    assert NoReply("x").code is ErrorCode.DEADLINE_EXCEEDED
    assert issubclass(ConnectionFailed, Unavailable) and not ConnectionFailed("x").retryable
    with pytest.raises(TimeoutError):  # code written for timeouts catches NoReply too
        raise NoReply("nothing came back")


def test_code_from_status() -> None:
    for code in ErrorCode:
        assert code_from_status(code.status) is code
        assert code_from_status(str(code.status)) is code
    assert code_from_status("418") is None
    assert code_from_status("nope") is None
    assert code_from_status(None) is None


def test_public_names_are_exported() -> None:
    for name in natriton_client.__all__:
        assert getattr(natriton_client, name) is not None, name
    assert natriton_client.__version__ == "0.1.0"
    assert natriton_client.errors.NotFound is NotFound
    with pytest.raises(AttributeError):
        natriton_client.NoSuchThing  # noqa: B018


# ------------------------------------------------------------------------------------------------
# Retry schedule
# ------------------------------------------------------------------------------------------------
def overloaded(retry_after_ms: int | None = None) -> Overloaded:
    return Overloaded("busy", retry_after_ms=retry_after_ms)


def test_a_retry_after_hint_is_honoured_with_jitter_added() -> None:
    policy = RetryPolicy(jitter=0.2)
    assert policy.delay_s(0, 300, rand=0.0) == pytest.approx(0.3)
    assert policy.delay_s(0, 300, rand=0.999) == pytest.approx(0.3 * 1.1998)
    assert policy.delay_s(5, 5_000, rand=0.0) == pytest.approx(5.0)  # a hint is honoured over max_backoff_s


def test_backoff_without_a_hint_doubles_up_to_its_cap() -> None:
    policy = RetryPolicy(backoff_s=0.1, max_backoff_s=0.5, jitter=0.0)
    assert [policy.delay_s(n, None, rand=0.5) for n in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


def test_retry_delay_rules() -> None:
    policy = RetryPolicy(max_retries=2, max_total_s=5.0, jitter=0.0, min_budget_s=0.05)
    ok = {"elapsed_s": 0.0, "remaining_s": 10.0, "rand": 0.0}
    assert retry_delay_s(policy, overloaded(200), retries_done=0, **ok) == pytest.approx(0.2)
    assert retry_delay_s(policy, overloaded(200), retries_done=1, **ok) == pytest.approx(0.2)
    assert retry_delay_s(policy, overloaded(200), retries_done=2, **ok) is None  # max_retries
    assert retry_delay_s(policy, NotFound("x"), retries_done=0, **ok) is None  # not retryable
    assert retry_delay_s(policy, InvalidArgument("x"), retries_done=0, **ok) is None
    assert retry_delay_s(policy, ConnectionFailed("x"), retries_done=0, **ok) is None
    assert retry_delay_s(policy, NoResponders("x"), retries_done=0, **ok) == pytest.approx(policy.backoff_s)
    # never past the deadline: the wait must leave min_budget_s
    assert retry_delay_s(policy, overloaded(200), retries_done=0, elapsed_s=0, remaining_s=0.26, rand=0) is not None
    assert retry_delay_s(policy, overloaded(200), retries_done=0, elapsed_s=0, remaining_s=0.24, rand=0) is None
    assert retry_delay_s(policy, DeadlineExceeded("x"), retries_done=0, elapsed_s=1, remaining_s=0, rand=0) is None
    # the cap on the total time
    assert retry_delay_s(policy, overloaded(200), retries_done=0, elapsed_s=4.9, remaining_s=10, rand=0) is None
    assert NO_RETRY.max_retries == 0
    assert retry_delay_s(NO_RETRY, overloaded(1), retries_done=0, **ok) is None


def test_retry_policy_validates() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=-0.1)


# ------------------------------------------------------------------------------------------------
# Requests, headers and deadlines
# ------------------------------------------------------------------------------------------------
def test_make_request_needs_exactly_one_input() -> None:
    assert make_request("m", text="hi", top_k=3).input == TextInput(text="hi")
    tensor = Tensor(name="IMAGE", datatype="UINT8", shape=(1, 2), data=b"ab")
    request = make_request("m", tensors=[tensor], version="2", use_cache=False)
    assert request.input.tensors == (tensor,) and request.version == "2" and not request.use_cache  # type: ignore[union-attr]
    for bad in ({}, {"image": b"x", "text": "y"}):
        with pytest.raises(ValueError, match="exactly one"):
            make_request("m", **bad)
    assert InferCall("m", image=b"x", top_k=2).to_request() == make_request("m", image=b"x", top_k=2)


def test_request_id_rules() -> None:
    check_request_id("")
    check_request_id("cam-1-frame-7")
    check_request_id("x" * 128)
    for bad in ("x" * 129, "a\nb", "tab\there"):
        with pytest.raises(InvalidArgument) as caught:
            check_request_id(bad)
        assert caught.value.client_side and caught.value.attempts == 0


def test_results_to_rules() -> None:
    assert check_results_to("shared") == "shared"
    assert check_results_to(" camera.7.answers ") == "camera.7.answers"
    for bad in (
        "",
        "a.*",
        "a.>",
        "a..b",
        ".a",
        "natriton",
        "natriton.v1.infer",
        "natriton.v1.internal.x",
        "natriton.v1.results.mobilenet_v2",
        "$SYS.x",
        "a b",
        "x" * 300,
    ):
        with pytest.raises(InvalidArgument):
            check_results_to(bad)
    subjects = {new_results_subject() for _ in range(100)}
    assert len(subjects) == 100
    assert all(s.startswith("_INBOX.") and check_results_to(s) == s for s in subjects)
    assert new_results_subject("camera.7").startswith("camera.7.")


def test_request_headers() -> None:
    out = request_headers(json=False, deadline={Header.TIMEOUT_MS: "500"})
    assert out == {Header.CONTENT_TYPE: MSGPACK, Header.TIMEOUT_MS: "500"}
    out = request_headers(
        json=True,
        deadline={Header.DEADLINE: "123"},
        request_id="r-1",
        trace={Header.TRACEPARENT: "00-abc"},
        results_to="shared",
        extra={"X-Extra": "1", Header.CONTENT_TYPE: "text/plain"},
    )
    assert out == {
        Header.CONTENT_TYPE: "text/plain",  # extra headers are applied last
        Header.DEADLINE: "123",
        Header.REQUEST_ID: "r-1",
        Header.TRACEPARENT: "00-abc",
        Header.RESULTS_TO: "shared",
        "X-Extra": "1",
    }


def test_relative_deadline_sends_what_is_left() -> None:
    deadline = Deadline.of(timeout_s=2.0, deadline_ms=None, default_timeout_s=10.0, now_s=100.0, now_ms=0)
    assert deadline.headers(100.0) == {Header.TIMEOUT_MS: "2000"}
    assert deadline.headers(101.25) == {Header.TIMEOUT_MS: "750"}  # a retry sends the remaining budget
    assert deadline.remaining_s(101.5) == pytest.approx(0.5)
    with pytest.raises(DeadlineExceeded) as caught:
        deadline.headers(102.0)
    assert caught.value.attempts == 0 and caught.value.client_side


def test_default_timeout_and_bad_timeouts() -> None:
    deadline = Deadline.of(timeout_s=None, deadline_ms=None, default_timeout_s=10.0, now_s=0.0, now_ms=0)
    assert deadline.headers(0.0) == {Header.TIMEOUT_MS: "10000"}
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError):
            Deadline.of(timeout_s=bad, deadline_ms=None, default_timeout_s=10.0, now_s=0.0, now_ms=0)


def test_absolute_deadline_wins_and_is_sent_unchanged() -> None:
    now_ms = 1_700_000_000_000
    deadline = Deadline.of(
        timeout_s=60.0, deadline_ms=now_ms + 3_000, default_timeout_s=10.0, now_s=50.0, now_ms=now_ms
    )
    assert deadline.at_s == pytest.approx(53.0)
    assert deadline.headers(50.0) == {Header.DEADLINE: str(now_ms + 3_000)}
    assert deadline.headers(52.0) == {Header.DEADLINE: str(now_ms + 3_000)}
    past = Deadline.of(timeout_s=None, deadline_ms=now_ms - 1, default_timeout_s=10.0, now_s=50.0, now_ms=now_ms)
    with pytest.raises(DeadlineExceeded):
        past.headers(50.0)


# ------------------------------------------------------------------------------------------------
# Reply decoding
# ------------------------------------------------------------------------------------------------
def test_decode_reply_by_content_type() -> None:
    as_json = REPLY_CODEC.encode(RESPONSE, json=True)
    as_msgpack = REPLY_CODEC.encode(RESPONSE)
    assert decode_reply(as_json, {Header.CONTENT_TYPE: JSON}) == RESPONSE
    assert decode_reply(as_msgpack, {Header.CONTENT_TYPE: MSGPACK}) == RESPONSE
    assert decode_reply(as_json, None, json=True) == RESPONSE
    assert decode_reply(as_json, None) == RESPONSE  # no header, no hint: msgpack, then JSON
    assert decode_reply(as_msgpack, {}) == RESPONSE
    assert content_is_json({Header.CONTENT_TYPE: "application/json; charset=utf-8"}) is True
    assert content_is_json({Header.CONTENT_TYPE: "text/plain"}) is None


def test_undecodable_replies_become_error_replies() -> None:
    reply = decode_reply(b"\xc1garbage", {Header.REQUEST_ID: "r-9"})
    assert isinstance(reply, ErrorReply) and reply.code is ErrorCode.INTERNAL and reply.request_id == "r-9"
    headers = {Header.SERVICE_ERROR: "queue full", Header.SERVICE_ERROR_CODE: "429", Header.REQUEST_ID: "r-2"}
    reply = decode_reply(b"", headers)
    assert reply == ErrorReply(request_id="r-2", code=ErrorCode.OVERLOADED, message="queue full")


# ------------------------------------------------------------------------------------------------
# Trace context
# ------------------------------------------------------------------------------------------------
def test_trace_headers() -> None:
    assert trace_headers("00-explicit", propagate=True) == {Header.TRACEPARENT: "00-explicit"}
    assert trace_headers(None, propagate=False) == {}
    assert current_trace_headers() == {}  # no current span
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    tracer = sdk_trace.TracerProvider().get_tracer("test")  # a local provider: the global one is left alone
    with tracer.start_as_current_span("producer") as span:
        context = span.get_span_context()
        headers = trace_headers(None, propagate=True)
        assert headers[Header.TRACEPARENT].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
        assert trace_headers("00-explicit", propagate=True) == {Header.TRACEPARENT: "00-explicit"}
        assert trace_headers(None, propagate=False) == {}


# ------------------------------------------------------------------------------------------------
# The retry loop on a stub connection (no server, no real waiting)
# ------------------------------------------------------------------------------------------------
@dataclass
class StubMsg:
    data: bytes
    headers: dict[str, str] | None = None


@dataclass
class StubNats:
    """Answers ``request`` with the next scripted outcome (a Reply or an exception) and records each call."""

    outcomes: list[Any]
    calls: list[dict[str, Any]] = field(default_factory=list)
    is_closed: bool = False
    max_payload: int = 1024

    async def request(
        self,
        subject: str,
        payload: bytes,
        timeout: float,  # noqa: ASYNC109 (nats-py's signature)
        headers: Mapping[str, str],
    ) -> StubMsg:
        self.calls.append({"subject": subject, "payload": payload, "timeout": timeout, "headers": dict(headers)})
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return StubMsg(REPLY_CODEC.encode(outcome), {Header.CONTENT_TYPE: MSGPACK})


class ZeroRandom:
    def random(self) -> float:
        return 0.0


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The retry waits, recorded instead of slept."""
    recorded: list[float] = []

    async def fake_sleep(delay: float) -> None:
        recorded.append(delay)

    monkeypatch.setattr(aio_module.asyncio, "sleep", fake_sleep)
    return recorded


def stub_client(outcomes: list[Any], **options: Any) -> tuple[AsyncClient, StubNats]:
    nc = StubNats(outcomes)
    options.setdefault("resend_on_ingest_loss", False)  # no heartbeats here (tests/integration/test_crash_recovery.py)
    client = AsyncClient(nc, propagate_trace=False, **options)  # type: ignore[arg-type]
    client._rng = ZeroRandom()  # type: ignore[assignment]
    return client, nc


def busy(ms: int | None) -> ErrorReply:
    return ErrorReply(request_id="r-1", code=ErrorCode.OVERLOADED, message="queue full", retry_after_ms=ms)


async def test_retry_loop_honours_retry_after_and_keeps_the_request(waits: list[float]) -> None:
    client, nc = stub_client([busy(300), busy(100), RESPONSE])
    assert await client.infer("mobilenet_v2", image=b"x", request_id="r-1", timeout_s=5) == RESPONSE
    assert waits == pytest.approx([0.3, 0.1])
    assert len(nc.calls) == 3
    assert len({c["payload"] for c in nc.calls}) == 1  # the same body every time
    assert REQUEST_CODEC.decode(nc.calls[0]["payload"]).model == "mobilenet_v2"
    assert {c["headers"][Header.REQUEST_ID] for c in nc.calls} == {"r-1"}
    budgets = [int(c["headers"][Header.TIMEOUT_MS]) for c in nc.calls]
    assert all(4_900 <= b <= 5_000 for b in budgets)  # the sleeps were faked; the budget is what was left
    for call in nc.calls:  # the local wait: the budget plus the reply grace (1 s)
        assert call["timeout"] == pytest.approx(int(call["headers"][Header.TIMEOUT_MS]) / 1000 + 1.0, abs=0.05)


async def test_retry_loop_gives_up_with_the_last_error(waits: list[float]) -> None:
    client, nc = stub_client([busy(10)] * 4, retry=RetryPolicy(max_retries=3))
    with pytest.raises(Overloaded) as caught:
        await client.infer("m", image=b"x", request_id="r-1")
    assert caught.value.attempts == 4 and len(nc.calls) == 4 and len(waits) == 3


async def test_retry_loop_never_waits_past_the_deadline(waits: list[float]) -> None:
    client, nc = stub_client([busy(2_000), RESPONSE])
    with pytest.raises(Overloaded) as caught:
        await client.infer("m", image=b"x", timeout_s=1.0)
    assert caught.value.attempts == 1 and waits == [] and len(nc.calls) == 1


async def test_retry_loop_maps_nats_failures(waits: list[float]) -> None:
    client, nc = stub_client([nats.errors.NoRespondersError(), nats.errors.NoRespondersError(), RESPONSE])
    assert await client.infer("m", image=b"x") == RESPONSE
    assert len(nc.calls) == 3
    assert waits == pytest.approx([0.05, 0.1])  # backoff without a hint
    for failure, expected in [
        (nats.errors.TimeoutError(), NoReply),
        (nats.errors.MaxPayloadError(), PayloadTooLarge),
        (nats.errors.ConnectionClosedError(), ConnectionFailed),
        (nats.errors.OutboundBufferLimitError(), Unavailable),
    ]:
        client, _ = stub_client([failure], retry=NO_RETRY)
        with pytest.raises(expected) as caught:
            await client.infer("m", image=b"x", request_id="r-5")
        assert caught.value.request_id == "r-5" and caught.value.client_side


async def test_non_retryable_errors_are_raised_at_once(waits: list[float]) -> None:
    reply = ErrorReply(request_id="r-1", code=ErrorCode.NOT_FOUND, message="unknown model")
    client, nc = stub_client([reply, RESPONSE])
    with pytest.raises(NotFound):
        await client.infer("m", image=b"x")
    assert waits == [] and len(nc.calls) == 1


async def test_mesh_error_without_a_decodable_body_uses_its_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    client, nc = stub_client([], retry=NO_RETRY)

    async def request(*args: Any, **kwargs: Any) -> StubMsg:
        return StubMsg(b"", {Header.SERVICE_ERROR_CODE: "503", Header.SERVICE_ERROR: "triton down"})

    monkeypatch.setattr(nc, "request", request)
    with pytest.raises(Unavailable, match="triton down"):
        await client.infer("m", image=b"x")
    client, nc = stub_client([], retry=NO_RETRY)

    async def garbage(*args: Any, **kwargs: Any) -> StubMsg:
        return StubMsg(b"\xc1", None)

    monkeypatch.setattr(nc, "request", garbage)
    with pytest.raises(Internal):
        await client.infer("m", image=b"x")


# ------------------------------------------------------------------------------------------------
# infer_many on a stub infer_request
# ------------------------------------------------------------------------------------------------
class TimedClient(AsyncClient):
    """``infer_request`` sleeps the milliseconds in the text input; model ``missing`` fails."""

    def __init__(self) -> None:
        super().__init__(StubNats([]), propagate_trace=False)  # type: ignore[arg-type]
        self.in_flight = 0
        self.max_in_flight = 0
        self.started: list[str] = []
        self.cancelled: list[str] = []

    async def infer_request(self, request: InferRequest, **kwargs: Any) -> InferResponse:  # type: ignore[override]
        rid = kwargs.get("request_id") or request.model
        self.started.append(rid)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            assert isinstance(request.input, TextInput)
            await asyncio.sleep(int(request.input.text) / 1000)
        except asyncio.CancelledError:
            self.cancelled.append(rid)
            raise
        finally:
            self.in_flight -= 1
        if request.model == "missing":
            raise NotFound("unknown model", request_id=rid)
        return InferResponse(request_id=rid, model=request.model, version="1", result=RESPONSE.result)


def timed(rid: str, ms: int, model: str = "m") -> InferCall:
    return InferCall(model, text=str(ms), request_id=rid)


async def test_infer_many_keeps_order_within_the_concurrency_limit() -> None:
    client = TimedClient()
    calls = (timed(str(i), ms) for i, ms in enumerate([40, 5, 20, 5, 30, 1, 10]))
    got = [r.request_id async for r in client.infer_many(calls, concurrency=3)]
    assert got == [str(i) for i in range(7)]
    assert client.max_in_flight == 3


async def test_infer_many_as_completed() -> None:
    client = TimedClient()
    calls = [timed("slow", 60), timed("fast", 1), timed("mid", 25)]
    got = [r.request_id async for r in client.infer_many(calls, concurrency=3, ordered=False)]
    assert got == ["fast", "mid", "slow"]
    client = TimedClient()
    got = [r.request_id async for r in client.infer_many(calls, concurrency=1, ordered=False)]
    assert got == ["slow", "fast", "mid"]  # one at a time: completion order is request order


async def test_infer_many_returns_or_raises_errors() -> None:
    client = TimedClient()
    calls = [timed("a", 1), timed("b", 1, model="missing"), timed("c", 1)]
    outcomes = [o async for o in client.infer_many(calls, return_exceptions=True)]
    assert isinstance(outcomes[0], InferResponse) and isinstance(outcomes[2], InferResponse)
    assert isinstance(outcomes[1], NotFound) and outcomes[1].request_id == "b"
    client = TimedClient()
    calls = [timed("a", 1), timed("b", 1, model="missing"), timed("slow-1", 5_000), timed("slow-2", 5_000)]
    with pytest.raises(NotFound):
        async for _ in client.infer_many(calls, concurrency=4):
            pass
    assert sorted(client.cancelled) == ["slow-1", "slow-2"]  # what was still in flight is cancelled


async def test_infer_many_stops_reading_requests_when_closed_early() -> None:
    client = TimedClient()
    read: list[int] = []

    def calls() -> Any:
        for i in range(1_000):
            read.append(i)
            yield timed(str(i), 1 if i == 0 else 5_000)

    async with contextlib.aclosing(client.infer_many(calls(), concurrency=2)) as results:
        async for first in results:
            assert first.request_id == "0"
            break
    assert len(read) == 3  # two at first, one more when the first completed
    assert client.in_flight == 0
    assert set(client.cancelled) == set(client.started) - {"0"}  # what had started was cancelled


async def test_infer_many_validates_concurrency() -> None:
    with pytest.raises(ValueError):
        async for _ in TimedClient().infer_many([], concurrency=0):
            pass


# ------------------------------------------------------------------------------------------------
# The blocking client's loop thread
# ------------------------------------------------------------------------------------------------
def test_loop_thread_runs_coroutines_and_stops() -> None:
    before = threading.active_count()
    runner = _LoopThread("test-loop")

    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    async def fail() -> None:
        raise NotFound("nope")

    assert runner.run(add(1, 2)) == 3
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def read_var() -> str:
        return var.get()

    token = var.set("from the caller")  # e.g. the current OpenTelemetry span of the calling thread
    try:
        assert runner.run(read_var()) == "from the caller"
    finally:
        var.reset(token)
    with pytest.raises(NotFound):
        runner.run(fail())
    runner.stop()
    runner.stop()
    assert runner.stopped and threading.active_count() == before
    with pytest.raises(RuntimeError, match="closed"):
        runner.run(add(1, 2))


# ------------------------------------------------------------------------------------------------
# Import graph: the package installs alone (nats-py and msgspec; opentelemetry optional, API only)
# ------------------------------------------------------------------------------------------------
IMPORT_CHECK = """
import json, sys
import natriton_client.protocol
light = sorted(m for m in ("nats", "asyncio") if m in sys.modules)
import natriton_client, natriton_client.errors, natriton_client.retry, natriton_client.aio, natriton_client.sync
from natriton_client import AsyncClient, Client
from natriton_client._wire import current_trace_headers
current_trace_headers()  # loads opentelemetry's API when installed, never its SDK
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("natriton", "natriton_dev", "numpy")
             or m.startswith("opentelemetry.sdk") or m.startswith("natriton_ingest"))
print(json.dumps({"light": light, "bad": bad}))
"""


def test_import_graph_stays_slim() -> None:
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["bad"] == []
    assert result["light"] == []  # the protocol alone needs neither nats-py nor asyncio


def test_wire_messages_round_trip() -> None:
    request = make_request("m", text="x")
    assert msgspec.msgpack.decode(REQUEST_CODEC.encode(request))["type"] == "infer_request"
