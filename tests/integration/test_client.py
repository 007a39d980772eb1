"""The slim client (natriton_client: AsyncClient, Client) against a real nats-server and a fake ingest.

The fake ingest is written here with plain nats-py: it answers ``natriton.v1.infer`` as ingest does (the reply in
the request's encoding, ``Natriton-Request-Id`` echoed, ``Nats-Service-Error``/``-Code`` on errors, fire-and-forget
answers on ``Natriton-Results-To``), and behaves by model name:

- ``mobilenet_v2`` (or anything not below): a classification (a batch for tensor requests with N > 1 items);
- ``sleepy``: the same after sleeping the number of milliseconds in the text input;
- ``missing``: ``not_found``;
- ``busy``: ``overloaded`` (retry_after_ms 150) for the first two attempts of a request id, then a result;
- ``always_busy``: ``overloaded``, retry_after_ms = the text input;
- ``slow``: answers after 3 s (past any deadline the tests use);
- ``overdue``: ``deadline_exceeded`` when the ``Natriton-Timeout-Ms`` budget is spent (as ingest does);
- ``garbage``: a body that is no message at all.

It runs on its own event loop in a thread, so the blocking :class:`Client` can be tested as well. No Triton,
Redis or Natriton service is started.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
import pytest_asyncio
from nats.aio.msg import Msg

from natriton_client import (
    NO_RETRY,
    AsyncClient,
    Batch,
    Classification,
    ClassScore,
    Client,
    ConnectionFailed,
    DeadlineExceeded,
    ErrorCode,
    ErrorReply,
    InferCall,
    InferRequest,
    InferResponse,
    Internal,
    InvalidArgument,
    MeshClient,
    NatritonError,
    NoReply,
    NoResponders,
    NotFound,
    Overloaded,
    RetryPolicy,
    Tensor,
    TextInput,
    Unavailable,
)
from natriton_client.protocol import (
    INFER_SUBJECT,
    JSON,
    MSGPACK,
    SHARED_RESULTS,
    Codec,
    Header,
    Reply,
    TensorInput,
    results_subject,
)
from natriton_dev.process import free_port
from natriton_dev.servers import NatsServer

REQUESTS: Codec[InferRequest] = Codec(InferRequest)
REPLIES: Codec[Reply] = Codec(Reply)
BUSY_RETRY_AFTER_MS = 150


class FakeIngest:
    """A stand-in for ingest on ``natriton.v1.infer`` (see the module docstring), on its own thread and loop."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.attempts: Counter[str] = Counter()
        """Requests received per request id."""
        self.headers: dict[str, dict[str, str]] = {}
        """The headers of the last request received per request id."""
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        """Per model: requests being answered now, and the most at once since the last reset."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-ingest", daemon=True)
        self._nc: nats.NATS | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        self._nc = await nats.connect(self.url, name="fake-ingest")
        await self._nc.subscribe(INFER_SUBJECT, queue="natriton.ingest", cb=self._on_request)
        await self._nc.flush()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _stop(self) -> None:
        if self._nc is not None:
            await self._nc.drain()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:  # "slow" answers still sleeping
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def reset(self) -> None:
        self.attempts.clear()
        self.headers.clear()
        self.max_in_flight.clear()

    async def _on_request(self, msg: Msg) -> None:
        # one task per request, so slow answers do not hold up the others (ingest is concurrent too)
        task = asyncio.get_running_loop().create_task(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Msg) -> None:
        assert self._nc is not None
        headers = dict(msg.headers or {})
        json = headers.get(Header.CONTENT_TYPE, "") == JSON
        request_id = headers.get(Header.REQUEST_ID) or uuid.uuid4().hex
        self.attempts[request_id] += 1
        self.headers[request_id] = headers
        model, reply = await self._reply(msg.data, json, request_id, headers)
        destination = msg.reply
        if not destination:  # fire-and-forget
            results_to = headers.get(Header.RESULTS_TO, "")
            if not results_to:
                return
            destination = results_subject(model) if results_to == SHARED_RESULTS else results_to
        if reply is None:  # "garbage"
            await self._nc.publish(destination, b"\xc1 not a message")
            return
        out = {Header.REQUEST_ID: request_id, Header.CONTENT_TYPE: JSON if json else MSGPACK}
        if isinstance(reply, ErrorReply):
            out[Header.SERVICE_ERROR] = reply.message
            out[Header.SERVICE_ERROR_CODE] = str(reply.code.status)
        await self._nc.publish(destination, REPLIES.encode(reply, json=json), headers=out)

    async def _reply(
        self, data: bytes, json: bool, request_id: str, headers: dict[str, str]
    ) -> tuple[str, Reply | None]:
        """The model named in the request and the answer (``None``: send garbage)."""
        try:
            request = REQUESTS.decode(data, json=json)
        except Exception as exc:
            return "", error(request_id, ErrorCode.INVALID_ARGUMENT, f"undecodable request: {exc}")
        model = request.model
        self.in_flight[model] += 1
        self.max_in_flight[model] = max(self.max_in_flight[model], self.in_flight[model])
        try:
            return model, await self._answer_for(request, request_id, headers)
        finally:
            self.in_flight[model] -= 1

    async def _answer_for(self, request: InferRequest, request_id: str, headers: dict[str, str]) -> Reply | None:
        model = request.model
        text = request.input.text if isinstance(request.input, TextInput) else ""
        if model == "missing":
            return error(request_id, ErrorCode.NOT_FOUND, f"unknown model {model!r}")
        if model == "busy" and self.attempts[request_id] <= 2:
            return error(request_id, ErrorCode.OVERLOADED, "queue full", BUSY_RETRY_AFTER_MS)
        if model == "always_busy":
            return error(request_id, ErrorCode.OVERLOADED, "queue full", int(text or 50))
        if model == "garbage":
            return None
        if model == "slow":
            await asyncio.sleep(3.0)
        if model == "overdue":  # what ingest does when the mesh is too slow: deadline_exceeded at the deadline
            await asyncio.sleep(int(headers[Header.TIMEOUT_MS]) / 1000)
            return error(request_id, ErrorCode.DEADLINE_EXCEEDED, "no answer before the deadline")
        if model == "sleepy":
            await asyncio.sleep(int(text) / 1000)
        label = Classification(classes=(ClassScore(index=967, label="espresso", score=0.99),))
        items = request.input.tensors[0].shape[0] if isinstance(request.input, TensorInput) else 1
        result = Batch(items=(label,) * items) if items > 1 else label
        return InferResponse(request_id=request_id, model=model, version="1", result=result)


def error(request_id: str, code: ErrorCode, message: str, retry_after_ms: int | None = None) -> ErrorReply:
    return ErrorReply(request_id=request_id, code=code, message=message, retry_after_ms=retry_after_ms)


def fresh_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# ------------------------------------------------------------------------------------------------
# Fixtures: one nats-server with the fake ingest, one without any responder
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with NatsServer(tmp_path_factory.mktemp("client-nats")) as server:
        yield server.url


@pytest.fixture(scope="module")
def bare_nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A nats-server nobody answers on: requests get "no responders"."""
    with NatsServer(tmp_path_factory.mktemp("client-bare-nats")) as server:
        yield server.url


@pytest.fixture(scope="module")
def ingest(nats_url: str) -> Iterator[FakeIngest]:
    fake = FakeIngest(nats_url)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(ingest: FakeIngest) -> FakeIngest:
    ingest.reset()
    return ingest


@pytest_asyncio.fixture(loop_scope="session")
async def client(nats_url: str, ingest: FakeIngest) -> AsyncIterator[AsyncClient]:
    async with await AsyncClient.connect(nats_url, name="test-client", reply_grace_s=0.3) as aclient:
        yield aclient


@pytest.fixture
def sync_client(nats_url: str, ingest: FakeIngest) -> Iterator[Client]:
    with Client.connect(nats_url, name="test-sync-client", reply_grace_s=0.3) as c:
        yield c


# ------------------------------------------------------------------------------------------------
# Request/reply
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("json", [False, True])
async def test_infer_returns_the_typed_response(client: AsyncClient, fake: FakeIngest, json: bool) -> None:
    rid = fresh_id()
    response = await client.infer("mobilenet_v2", image=b"\xff\xd8jpeg", request_id=rid, json=json, top_k=3)
    assert isinstance(response, InferResponse)
    assert response.request_id == rid
    assert response.items()[0] == Classification(classes=(ClassScore(index=967, label="espresso", score=0.99),))
    sent = fake.headers[rid]
    assert sent[Header.CONTENT_TYPE] == (JSON if json else MSGPACK)
    assert 9_000 < int(sent[Header.TIMEOUT_MS]) <= 10_000  # the client's default budget, what was left of it
    assert Header.DEADLINE not in sent


async def test_tensor_batch_gives_one_item_per_input_item(client: AsyncClient) -> None:
    tensor = Tensor(name="IMAGE", datatype="UINT8", shape=(3, 2, 2, 3), data=bytes(36))
    response = await client.infer("mobilenet_v2", tensors=[tensor])
    assert isinstance(response.result, Batch)
    assert len(response.items()) == 3


async def test_deadline_and_trace_headers(client: AsyncClient, fake: FakeIngest) -> None:
    rid = fresh_id()
    deadline_ms = int(time.time() * 1000) + 4_000
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await client.infer("mobilenet_v2", text="x", request_id=rid, deadline_ms=deadline_ms, traceparent=traceparent)
    sent = fake.headers[rid]
    assert sent[Header.DEADLINE] == str(deadline_ms)
    assert Header.TIMEOUT_MS not in sent
    assert sent[Header.TRACEPARENT] == traceparent


async def test_current_opentelemetry_span_is_propagated(client: AsyncClient, fake: FakeIngest) -> None:
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    tracer = sdk_trace.TracerProvider().get_tracer("test")  # a local provider: the global one is left alone
    rid = fresh_id()
    with tracer.start_as_current_span("producer") as span:
        await client.infer("mobilenet_v2", text="x", request_id=rid)
        trace_id = f"{span.get_span_context().trace_id:032x}"
    assert fake.headers[rid][Header.TRACEPARENT].split("-")[1] == trace_id


async def test_error_reply_raises_its_typed_exception(client: AsyncClient, fake: FakeIngest) -> None:
    rid = fresh_id()
    with pytest.raises(NotFound) as caught:
        await client.infer("missing", image=b"x", request_id=rid)
    err = caught.value
    assert err.code is ErrorCode.NOT_FOUND and not err.retryable
    assert err.request_id == rid and "unknown model" in err.message
    assert isinstance(err.reply, ErrorReply) and not err.client_side
    assert err.attempts == 1 and fake.attempts[rid] == 1  # not retryable: sent once


async def test_overloaded_twice_then_success_honours_retry_after(client: AsyncClient, fake: FakeIngest) -> None:
    rid = fresh_id()
    started = time.monotonic()
    response = await client.infer("busy", image=b"x", request_id=rid, timeout_s=5)
    elapsed = time.monotonic() - started
    assert response.request_id == rid
    assert fake.attempts[rid] == 3
    assert elapsed >= 2 * BUSY_RETRY_AFTER_MS / 1000  # waited at least the hint before each retry
    assert elapsed < 2.0


async def test_without_retries_the_overloaded_error_is_raised(client: AsyncClient, fake: FakeIngest) -> None:
    rid = fresh_id()
    with pytest.raises(Overloaded) as caught:
        await client.infer("busy", image=b"x", request_id=rid, retry=NO_RETRY)
    assert caught.value.retry_after_ms == BUSY_RETRY_AFTER_MS and caught.value.retryable
    assert caught.value.attempts == 1 and fake.attempts[rid] == 1


async def test_retries_stop_at_max_retries(client: AsyncClient, fake: FakeIngest) -> None:
    rid = fresh_id()
    with pytest.raises(Overloaded) as caught:
        await client.infer("always_busy", text="20", request_id=rid, retry=RetryPolicy(max_retries=2))
    assert caught.value.attempts == 3 and fake.attempts[rid] == 3


async def test_no_retry_past_the_deadline(client: AsyncClient, fake: FakeIngest) -> None:
    rid = fresh_id()
    started = time.monotonic()
    with pytest.raises(Overloaded):  # the hint (5 s) is past the deadline (1 s): raised at once, no waiting
        await client.infer("always_busy", text="5000", request_id=rid, timeout_s=1.0)
    assert time.monotonic() - started < 0.9
    assert fake.attempts[rid] == 1


async def test_slow_responder_gives_deadline_exceeded(client: AsyncClient, fake: FakeIngest) -> None:
    rid = fresh_id()
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as caught:
        await client.infer("slow", image=b"x", request_id=rid, timeout_s=0.3)
    elapsed = time.monotonic() - started
    assert isinstance(caught.value, NoReply) and isinstance(caught.value, TimeoutError)
    assert caught.value.client_side and caught.value.request_id == rid
    assert 0.3 <= elapsed < 2.0  # the budget plus the client's reply grace (0.3 s), not the responder's 3 s
    assert fake.attempts[rid] == 1  # nothing left of the deadline to retry in


async def test_the_mesh_deadline_exceeded_reply_wins_over_the_local_timeout(
    client: AsyncClient, fake: FakeIngest
) -> None:
    rid = fresh_id()
    with pytest.raises(DeadlineExceeded) as caught:
        await client.infer("overdue", image=b"x", request_id=rid, timeout_s=0.3)
    assert not isinstance(caught.value, NoReply) and not caught.value.client_side
    assert fake.attempts[rid] == 1  # retryable, but the call's deadline is spent


async def test_deadline_already_past_is_not_sent(client: AsyncClient, fake: FakeIngest) -> None:
    rid = fresh_id()
    with pytest.raises(DeadlineExceeded) as caught:
        await client.infer("mobilenet_v2", image=b"x", request_id=rid, deadline_ms=int(time.time() * 1000) - 10)
    assert caught.value.attempts == 0 and caught.value.client_side
    await asyncio.sleep(0.05)
    assert fake.attempts[rid] == 0


async def test_undecodable_reply_is_internal(client: AsyncClient) -> None:
    with pytest.raises(Internal, match="could not decode"):
        await client.infer("garbage", image=b"x")


async def test_invalid_request_id_is_refused_before_sending(client: AsyncClient) -> None:
    with pytest.raises(InvalidArgument):
        await client.infer("mobilenet_v2", image=b"x", request_id="x" * 129)
    with pytest.raises(ValueError, match="exactly one"):
        await client.infer("mobilenet_v2", image=b"x", text="y")


async def test_no_responders_is_a_typed_unavailable_error(bare_nats_url: str) -> None:
    async with await AsyncClient.connect(bare_nats_url) as bare:
        with pytest.raises(NoResponders) as caught:
            await bare.infer("mobilenet_v2", image=b"x", retry=NO_RETRY)
        assert isinstance(caught.value, Unavailable) and caught.value.code is ErrorCode.UNAVAILABLE
        assert caught.value.attempts == 1
        started = time.monotonic()
        with pytest.raises(NoResponders) as caught:  # retryable: retried with backoff (no hint), then raised
            await bare.infer("mobilenet_v2", image=b"x", retry=RetryPolicy(max_retries=2, backoff_s=0.05))
        assert caught.value.attempts == 3
        assert time.monotonic() - started >= 0.05 + 0.1


async def test_connect_failure_is_connection_failed() -> None:
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as caught:
        await AsyncClient.connect(f"nats://127.0.0.1:{free_port()}", connect_timeout_s=0.5)
    assert not caught.value.retryable
    assert time.monotonic() - started < 3.0


async def test_wrapping_an_existing_connection_leaves_it_open(nats_url: str, ingest: FakeIngest) -> None:
    nc = await nats.connect(nats_url)
    try:
        async with await AsyncClient.connect(nc) as wrapped:
            assert (await wrapped.infer("mobilenet_v2", image=b"x")).model == "mobilenet_v2"
        assert nc.is_connected
    finally:
        await nc.close()


async def test_closed_client_raises_connection_failed(nats_url: str, ingest: FakeIngest) -> None:
    closing = await AsyncClient.connect(nats_url)
    await closing.close()
    assert closing.is_closed
    with pytest.raises(ConnectionFailed):
        await closing.infer("mobilenet_v2", image=b"x")


# ------------------------------------------------------------------------------------------------
# Many at once
# ------------------------------------------------------------------------------------------------
async def test_infer_many_in_order_with_a_concurrency_limit(client: AsyncClient, fake: FakeIngest) -> None:
    calls = [InferCall("sleepy", text=str(d), request_id=f"m-{i}") for i, d in enumerate([120, 10, 60, 10, 80, 30])]
    got = [r.request_id async for r in client.infer_many(iter(calls), concurrency=2)]
    assert got == [f"m-{i}" for i in range(6)]
    assert fake.max_in_flight["sleepy"] == 2


async def test_infer_many_as_completed(client: AsyncClient) -> None:
    calls = [InferCall("sleepy", text=str(d), request_id=rid) for rid, d in [("a", 400), ("b", 10), ("c", 200)]]
    got = [r.request_id async for r in client.infer_many(calls, concurrency=3, ordered=False)]
    assert got == ["b", "c", "a"]


async def test_infer_many_errors_raised_or_returned(client: AsyncClient) -> None:
    requests = [
        InferCall("mobilenet_v2", image=b"x", request_id="ok-1"),
        InferRequest(model="missing", input=TextInput(text="x")),
        InferCall("mobilenet_v2", image=b"x", request_id="ok-2"),
    ]
    outcomes = [o async for o in client.infer_many(requests, return_exceptions=True)]
    assert [type(o) for o in outcomes] == [InferResponse, NotFound, InferResponse]
    seen: list[str] = []
    with pytest.raises(NotFound):
        async for response in client.infer_many(requests, concurrency=1):
            seen.append(response.request_id)
    assert seen == ["ok-1"]


# ------------------------------------------------------------------------------------------------
# Fire-and-forget and results subscriptions
# ------------------------------------------------------------------------------------------------
async def test_results_subscription_gets_results_and_errors(client: AsyncClient) -> None:
    async with await client.results() as results:
        assert results.subject.startswith("_INBOX.")
        ok_id = await client.publish("mobilenet_v2", image=b"x", results_to=results.subject)
        bad_id = await client.publish("missing", image=b"x", results_to=results.subject, request_id="bad-1")
        assert bad_id == "bad-1" and len(ok_id) == 32
        answers = {}
        for _ in range(2):
            reply = await results.next(timeout_s=5)
            answers[reply.request_id] = reply
    assert isinstance(answers[ok_id], InferResponse)
    assert isinstance(answers[bad_id], ErrorReply) and answers[bad_id].code is ErrorCode.NOT_FOUND


async def test_shared_results_and_iteration(client: AsyncClient) -> None:
    results = await client.results(model="efficientnet_lite0")
    assert results.subject == "natriton.v1.results.efficientnet_lite0"
    sent = {await client.publish("efficientnet_lite0", text="x", results_to="shared", json=True) for _ in range(3)}
    received = set()
    async for reply in results:
        assert isinstance(reply, InferResponse)
        received.add(reply.request_id)
        if len(received) == 3:
            break
    assert received == sent
    await results.close()
    with pytest.raises(ConnectionFailed):
        await results.next(timeout_s=0.1)
    assert [r async for r in results] == []


async def test_results_next_times_out(client: AsyncClient) -> None:
    async with await client.results() as results:
        with pytest.raises(TimeoutError):
            await results.next(timeout_s=0.1)


async def test_publish_refuses_a_results_subject_the_mesh_would_drop(client: AsyncClient) -> None:
    for bad in ("camera.*", "natriton.v1.internal.route", "natriton.v1.results.mobilenet_v2", "a..b", "$SYS.x"):
        with pytest.raises(InvalidArgument):
            await client.publish("mobilenet_v2", image=b"x", results_to=bad)


# ------------------------------------------------------------------------------------------------
# The blocking client
# ------------------------------------------------------------------------------------------------
def test_sync_client_request_reply_and_errors(sync_client: Client, fake: FakeIngest) -> None:
    response = sync_client.infer("mobilenet_v2", image=b"x", request_id="sync-1")
    assert response.request_id == "sync-1"
    with pytest.raises(NotFound):
        sync_client.infer("missing", image=b"x")
    assert sync_client.infer("busy", image=b"x", request_id="sync-busy").request_id == "sync-busy"
    assert fake.attempts["sync-busy"] == 3
    with pytest.raises(NoReply):
        sync_client.infer("slow", image=b"x", timeout_s=0.2)


def test_sync_client_many_and_fire_and_forget(sync_client: Client) -> None:
    calls = [InferCall("sleepy", text=str(d), request_id=str(i)) for i, d in enumerate([50, 10, 30])]
    assert [r.request_id for r in sync_client.infer_many(calls, concurrency=2)] == ["0", "1", "2"]
    outcomes = list(sync_client.infer_many([InferCall("missing", image=b"x")], return_exceptions=True))
    assert isinstance(outcomes[0], NatritonError)
    with sync_client.results() as results:
        rid = sync_client.publish("mobilenet_v2", image=b"x", results_to=results.subject)
        bad = sync_client.publish("missing", image=b"x", results_to=results.subject)
        replies = {r.request_id: r for r in (results.next(timeout_s=5), results.next(timeout_s=5))}
    assert isinstance(replies[rid], InferResponse) and isinstance(replies[bad], ErrorReply)


def test_sync_client_propagates_the_callers_span(sync_client: Client, fake: FakeIngest) -> None:
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    tracer = sdk_trace.TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("producer") as span:
        sync_client.infer("mobilenet_v2", image=b"x", request_id="sync-trace")
        trace_id = f"{span.get_span_context().trace_id:032x}"
    assert fake.headers["sync-trace"][Header.TRACEPARENT].split("-")[1] == trace_id


def test_sync_client_closes_its_thread(nats_url: str, ingest: FakeIngest) -> None:
    before = threading.active_count()
    client = Client.connect(nats_url)
    assert client.infer("mobilenet_v2", image=b"x").model == "mobilenet_v2"
    client.close()
    client.close()  # idempotent
    assert client.is_closed
    assert threading.active_count() == before
    with pytest.raises(RuntimeError, match="closed"):
        client.infer("mobilenet_v2", image=b"x")


def test_sync_connect_failure() -> None:
    with pytest.raises(ConnectionFailed):
        Client.connect(f"nats://127.0.0.1:{free_port()}", connect_timeout_s=0.5)


# ------------------------------------------------------------------------------------------------
# The low-level MeshClient keeps its behaviour (returns the reply, never raises for an error reply)
# ------------------------------------------------------------------------------------------------
async def test_mesh_client_returns_replies(nats_url: str, ingest: FakeIngest) -> None:
    mesh = await MeshClient.connect(nats_url)
    try:
        reply = await mesh.infer("missing", image=b"x", request_id="mc-1", timeout_s=2)
        assert isinstance(reply, ErrorReply) and reply.request_id == "mc-1"
        reply = await mesh.infer("mobilenet_v2", image=b"x", json=True, extra_headers={"X-Test": "1"})
        assert isinstance(reply, InferResponse)
    finally:
        await mesh.close()
