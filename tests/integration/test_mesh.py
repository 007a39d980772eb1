"""The mesh end to end with real servers, real weights and real photographs."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import secrets

import numpy as np
import pytest
from nats.aio.client import Client as NATS
from PIL import Image

from natriton.messages import Classification, InferResponse, Reply
from natriton.tensors import to_tensor
from natriton_client.aio import MeshClient
from natriton_dev.otlp import OtlpSink, ReceivedSpan
from natriton_dev.stack import LocalStack
from tests.integration.conftest import triton_inference_count

pytestmark = pytest.mark.asyncio(loop_scope="session")
MODEL = "mobilenet_v2"
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def classes(reply: Reply) -> list[int]:
    assert isinstance(reply, InferResponse), reply
    assert isinstance(reply.result, Classification)
    return [c.index for c in reply.result.classes]


async def test_coffee_is_espresso(client: MeshClient, photos: dict[str, bytes]) -> None:
    reply = await client.infer(MODEL, image=photos["coffee.jpg"], use_cache=False)
    assert isinstance(reply, InferResponse)
    assert isinstance(reply.result, Classification)
    top = reply.result.classes[0]
    assert (top.index, top.label) == (967, "espresso")
    assert top.score > 0.9
    assert len(reply.result.classes) == 5
    assert reply.model == MODEL and reply.version == "1" and not reply.cached


async def test_chelsea_is_a_cat(client: MeshClient, photos: dict[str, bytes]) -> None:
    top5 = classes(await client.infer(MODEL, image=photos["chelsea.png"], use_cache=False))
    assert set(top5) & set(CAT_CLASSES), top5
    assert top5[0] in CAT_CLASSES


async def test_grace_hopper_wears_a_uniform(client: MeshClient, photos: dict[str, bytes]) -> None:
    top5 = classes(await client.infer(MODEL, image=photos["grace_hopper.jpg"], use_cache=False))
    assert 652 in top5  # military uniform
    assert {457, 834, 906} & set(top5)  # bow tie, suit, Windsor tie


async def test_repeat_is_answered_from_cache_without_triton(
    client: MeshClient, stack: LocalStack, photos: dict[str, bytes]
) -> None:
    image = photos["astronaut.jpg"]
    first = await client.infer(MODEL, image=image, top_k=3)
    assert isinstance(first, InferResponse) and not first.cached
    before = triton_inference_count(stack, MODEL)
    second = await client.infer(MODEL, image=image, top_k=3)
    assert isinstance(second, InferResponse) and second.cached
    assert second.result == first.result
    assert triton_inference_count(stack, MODEL) == before, "a cache hit must not reach Triton"
    # opting out of the cache goes to Triton again
    third = await client.infer(MODEL, image=image, top_k=3, use_cache=False)
    assert isinstance(third, InferResponse) and not third.cached
    assert triton_inference_count(stack, MODEL) == before + 1


async def test_raw_tensor_input(client: MeshClient, photos: dict[str, bytes]) -> None:
    image = Image.open(io.BytesIO(photos["coffee.jpg"])).convert("RGB")
    width, height = image.size
    side = min(width, height)
    square = image.crop(((width - side) // 2, (height - side) // 2, (width + side) // 2, (height + side) // 2))
    pixels = np.asarray(square.resize((224, 224), Image.Resampling.BILINEAR), dtype=np.uint8)[np.newaxis]
    reply = await client.infer(MODEL, tensors=[to_tensor("IMAGE", pixels)], use_cache=False)
    assert classes(reply)[0] == 967


async def test_plain_nats_json_producer(nc: NATS, photos: dict[str, bytes]) -> None:
    """A producer with only a NATS client and JSON: no Natriton code involved."""
    body = json.dumps(
        {
            "type": "infer_request",
            "model": MODEL,
            "input": {"type": "image", "data": base64.b64encode(photos["coffee.jpg"]).decode()},
            "top_k": 2,
        }
    ).encode()
    msg = await nc.request(
        "natriton.v1.infer",
        body,
        timeout=15,
        headers={"Content-Type": "application/json", "Natriton-Timeout-Ms": "10000"},
    )
    reply = json.loads(msg.data)
    assert reply["type"] == "infer_response"
    assert reply["result"]["type"] == "classification"
    assert reply["result"]["classes"][0]["label"] == "espresso"
    assert len(reply["result"]["classes"]) == 2
    assert msg.headers and msg.headers["Natriton-Request-Id"] == reply["request_id"]
    assert "Nats-Service-Error-Code" not in msg.headers


async def test_request_id_is_echoed(client: MeshClient, photos: dict[str, bytes]) -> None:
    reply = await client.infer(MODEL, image=photos["coffee.jpg"], request_id="order-42")
    assert isinstance(reply, InferResponse) and reply.request_id == "order-42"


@pytest.mark.parametrize(
    ("model", "wanted"),
    [
        # a detector's answer is made by postprocess; a classifier's by the router itself (decision 0012)
        ("face_detector", {"natriton-ingest", "natriton-preprocess", "natriton-router", "natriton-postprocess"}),
        (MODEL, {"natriton-ingest", "natriton-preprocess", "natriton-router"}),
    ],
)
async def test_one_trace_spans_every_service_the_request_passes(
    client: MeshClient, otlp_sink: OtlpSink, photos: dict[str, bytes], model: str, wanted: set[str]
) -> None:
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    reply = await client.infer(
        model, image=photos["grace_hopper.jpg"], use_cache=False, extra_headers={"traceparent": traceparent}
    )
    assert isinstance(reply, InferResponse)
    for _ in range(100):
        if wanted <= {s.service for s in otlp_sink.spans(trace_id)}:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)  # a span of a hop the request should not have passed would be exported by now
    spans = otlp_sink.spans(trace_id)
    assert {s.service for s in spans} == wanted, spans
    ids = {s.span_id for s in spans}
    for span in spans:
        if span.service != "natriton-ingest":
            assert span.parent_span_id in ids, f"{span.name} is not a child of a span of this trace"
    # messaging semantic conventions: each hop processes a message, each hand-off is a send span
    processed = [s for s in spans if attribute(s, "messaging.operation.type") == "process"]
    assert wanted <= {s.service for s in processed}, processed
    for span in processed:
        assert attribute(span, "messaging.system") == "nats"
        assert attribute(span, "messaging.operation.name") == "process"
        assert attribute(span, "messaging.destination.name").startswith("natriton.")
        assert attribute(span, "messaging.consumer.group.name").startswith("natriton")
        assert int(attribute(span, "messaging.message.body.size")) > 0
        assert "error.type" not in span.attributes
    sent = {s.span_id: s for s in spans if attribute(s, "messaging.operation.type") == "send"}
    assert {"natriton-ingest", "natriton-preprocess", "natriton-router"} <= {s.service for s in sent.values()}
    for span in processed:
        if span.service != "natriton-ingest":
            parent = sent.get(span.parent_span_id)
            assert parent is not None, f"{span.name} is not a child of a send span"
            assert attribute(parent, "messaging.destination.name") == attribute(span, "messaging.destination.name")


def attribute(span: ReceivedSpan, key: str) -> str:
    """A span attribute's value as text ('' when absent); the sink keeps each as its protobuf text form."""
    raw = span.attributes.get(key, "").strip()
    _, _, value = raw.partition(": ")
    return value.strip('"')


async def test_services_are_discoverable_with_nats_micro(nc: NATS, client: MeshClient) -> None:
    await client.infer(MODEL, text="a request so that the counters have something to count")
    inbox = nc.new_inbox()
    names: set[str] = set()

    async def on_pong(msg: object) -> None:
        names.add(json.loads(msg.data)["name"])  # type: ignore[attr-defined]

    sub = await nc.subscribe(inbox, cb=on_pong)
    await nc.publish("$SRV.PING", b"", reply=inbox)
    await asyncio.sleep(0.5)
    await sub.unsubscribe()
    assert {"natriton-ingest", "natriton-preprocess", "natriton-router", "natriton-postprocess"} <= names
    stats = json.loads((await nc.request("$SRV.STATS.natriton-ingest", b"", timeout=2)).data)
    endpoint = stats["endpoints"][0]
    assert endpoint["subject"] == "natriton.v1.infer"
    assert endpoint["data"]["received"] >= 1
    assert endpoint["num_requests"] >= 1 and endpoint["num_errors"] >= 1  # the text was refused: truthful stats
