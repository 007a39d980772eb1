"""Spans follow the OpenTelemetry messaging conventions; ``traceparent`` names the send span; Triton gets it too."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import SpanKind, StatusCode

from natriton.errors import ErrorCode, MeshError
from natriton.runtime import Inbound, ServiceRuntime
from natriton.settings import CommonSettings
from natriton.telemetry import (
    extract,
    hop_span,
    inject,
    mark_error,
    process_attributes,
    send_span,
    unsampled_child,
)
from natriton_router.triton import TritonGateway

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans()}


def test_process_attributes_follow_the_messaging_conventions() -> None:
    assert process_attributes("natriton.v1.route", "natriton-router", 42) == {
        "messaging.system": "nats",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": "natriton.v1.route",
        "messaging.consumer.group.name": "natriton-router",
        "messaging.message.body.size": 42,
    }


def test_a_hop_span_is_a_consumer_child_of_traceparent(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("test")
    with hop_span(tracer, "demo work", {"traceparent": TRACEPARENT}, attributes=process_attributes("s", "q", 1)):
        pass
    span = by_name(exporter)["demo work"]
    assert span.kind is SpanKind.CONSUMER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert span.attributes is not None and span.attributes["messaging.operation.type"] == "process"


def test_mark_error_sets_error_type(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    with provider.get_tracer("test").start_as_current_span("failing") as span:
        mark_error(span, ErrorCode.NOT_FOUND.value, "no such model")
    failed = by_name(exporter)["failing"]
    assert failed.attributes is not None
    assert failed.attributes["error.type"] == failed.attributes["natriton.error.code"] == "not_found"
    assert failed.status.status_code is StatusCode.ERROR


def test_a_sampled_send_is_a_producer_span_named_by_traceparent(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("hop") as hop:
        headers: dict[str, str] = {"Natriton-Mesh-Id": "m1"}
        inject(headers)
        original = dict(headers)
        with send_span(tracer, "natriton.v1.route", headers, 7) as sent:
            pass
    assert headers == original, "the caller's headers are not changed"
    spans = by_name(exporter)
    send = spans["send natriton.v1.route"]
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is not None and send.parent.span_id == hop.get_span_context().span_id
    assert send.attributes is not None
    assert send.attributes["messaging.operation.type"] == "send"
    assert send.attributes["messaging.destination.name"] == "natriton.v1.route"
    assert send.attributes["messaging.message.body.size"] == 7
    assert sent["Natriton-Mesh-Id"] == "m1"
    assert trace.get_current_span(extract(sent)).get_span_context().span_id == send.context.span_id


def test_an_unsampled_send_makes_no_span(exporter: InMemorySpanExporter) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("hop"):
        headers: dict[str, str] = {}
        inject(headers)
        with send_span(tracer, "natriton.v1.route", headers, 7) as sent:
            assert sent is headers
    assert exporter.get_finished_spans() == ()
    carried = trace.get_current_span(extract(headers)).get_span_context()
    assert carried.is_valid and not carried.trace_flags.sampled, "the trace id still travels, unsampled"


# ------------------------------------------------------------------------------------------------ through the runtime
class RecordingConnection:
    def __init__(self) -> None:
        self.subscriptions: dict[str, Any] = {}
        self.published: list[tuple[str, dict[str, str] | None]] = []

    async def subscribe(self, subject: str, queue: str = "", cb: Any = None, **_: Any) -> object:
        self.subscriptions[subject] = cb
        return object()

    async def publish(self, subject: str, payload: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.published.append((subject, headers))

    async def flush(self) -> None:
        pass


async def test_the_runtime_processes_and_sends_by_the_conventions(
    monkeypatch: pytest.MonkeyPatch, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    fake = RecordingConnection()

    async def connect(**_: Any) -> RecordingConnection:
        return fake

    monkeypatch.setattr("natriton.runtime.nats.connect", connect)
    rt = ServiceRuntime("demo", "0.1.0", CommonSettings(instance_id="copy-1"))
    rt.tracer = provider.get_tracer("natriton.demo")
    rt.only_sampled_parents = False  # this tracer records every span, sampled parent or not
    await rt.connect()

    async def handler(inbound: Inbound) -> None:
        if inbound.data == b"bad":
            raise MeshError(ErrorCode.NOT_FOUND, "no such model")
        out: dict[str, str] = {}
        inject(out)
        await rt.publish("demo.next", b"payload", out)

    await rt.add_endpoint("work", "demo.work", handler, queue_group="q.demo")
    callback = fake.subscriptions["demo.work"]
    msg = Msg(_client=None, subject="demo.work", data=b"hello", headers={"traceparent": TRACEPARENT})  # type: ignore[arg-type]
    await callback(msg)
    await callback(Msg(_client=None, subject="demo.work", data=b"bad"))  # type: ignore[arg-type]
    await asyncio.gather(*list(rt._tasks))
    spans = exporter.get_finished_spans()
    (ok,) = [s for s in spans if s.name == "demo work" and s.context.trace_id == int(TRACE_ID, 16)]
    (failed,) = [s for s in spans if s.name == "demo work" and s.context.trace_id != int(TRACE_ID, 16)]
    (send,) = [s for s in spans if s.name == "send demo.next"]
    assert ok.kind is SpanKind.CONSUMER and ok.attributes == process_attributes("demo.work", "q.demo", 5)
    assert failed.attributes is not None and failed.attributes["error.type"] == "not_found"
    assert send.kind is SpanKind.PRODUCER and send.parent is not None and send.parent.span_id == ok.context.span_id
    ((subject, headers),) = fake.published
    assert subject == "demo.next" and headers is not None
    assert trace.get_current_span(extract(headers)).get_span_context().span_id == send.context.span_id


# ------------------------------------------------------------------------------------------------ on to Triton
class StubInferResult:
    def as_numpy(self, name: str) -> np.ndarray[Any, Any]:
        return np.zeros((1, 2), dtype=np.float32)


class StubTritonClient:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def infer(self, model: str, inputs: Any, **kwargs: Any) -> StubInferResult:
        self.calls.append(kwargs)
        return StubInferResult()


async def test_the_triton_call_carries_the_current_span_as_traceparent(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    gateway = TritonGateway("127.0.0.1:1", timeout_s=1.0)
    stub = StubTritonClient()
    gateway._client = stub
    inputs = {"IMAGE": np.zeros((1, 4), dtype=np.uint8)}
    with provider.get_tracer("test").start_as_current_span("batch demo") as batch:
        await gateway.infer("demo", "1", inputs, ("OUT",))
    context = batch.get_span_context()
    sent = stub.calls[0]["headers"]
    assert list(sent) == ["traceparent"]
    assert sent["traceparent"].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")
    carried = trace.get_current_span(extract(sent)).get_span_context()
    assert carried.span_id == context.span_id and carried.trace_flags.sampled
    await gateway.infer("demo", "1", inputs, ("OUT",))  # outside any span: no metadata
    assert stub.calls[1]["headers"] is None


def test_a_hop_of_an_unsampled_trace_gets_its_span_without_the_sdk() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    span = unsampled_child({"traceparent": parent})
    assert span is not None and not span.is_recording()
    ctx = span.get_span_context()
    assert format(ctx.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"  # the same trace
    assert ctx.span_id not in (0, 0xB7AD6B7169203331) and not ctx.trace_flags.sampled
    # what the SDK makes for the same parent under parentbased_always_off: a non-recording child in the same trace
    sdk = TracerProvider(sampler=ParentBased(ALWAYS_OFF)).get_tracer("t")
    with hop_span(sdk, "hop", {"traceparent": parent}) as made:
        assert not made.is_recording() and made.get_span_context().trace_id == ctx.trace_id
    fresh = unsampled_child({})
    assert fresh is not None and fresh.get_span_context().trace_id != 0  # no parent: a new trace
    for left_to_the_sdk in (
        {"traceparent": parent[:-2] + "01"},  # sampled: recorded
        {"traceparent": parent, "tracestate": "k=v"},
        {"traceparent": "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033-00"},
        {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-00"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c8031zz-b7ad6b7169203331-00"},
    ):
        assert unsampled_child(left_to_the_sdk) is None, left_to_the_sdk
