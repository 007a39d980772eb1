"""Bad input gets a clear, typed error reply, and every service keeps running (see services_stay_up)."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from nats.aio.client import Client as NATS
from PIL import Image

from natriton import headers
from natriton.errors import ErrorCode
from natriton.messages import Codec, ErrorReply, ImageInput, InferRequest, InferResponse, Reply, TextInput
from natriton.tensors import to_tensor
from natriton_client.aio import MeshClient
from natriton_dev.images import encode_png

pytestmark = pytest.mark.asyncio(loop_scope="session")
MODEL = "mobilenet_v2"


def assert_error(reply: Reply, code: ErrorCode, *fragments: str) -> ErrorReply:
    assert isinstance(reply, ErrorReply), reply
    assert reply.code == code, reply
    for fragment in fragments:
        assert fragment in reply.message, reply.message
    return reply


async def still_serving(client: MeshClient, photos: dict[str, bytes]) -> None:
    reply = await client.infer(MODEL, image=photos["coffee.jpg"])
    assert isinstance(reply, InferResponse)


async def test_garbage_bytes(client: MeshClient, photos: dict[str, bytes]) -> None:
    assert_error(await client.send(b"\xc1\xc1 definitely not msgpack"), ErrorCode.INVALID_ARGUMENT, "infer_request")
    await still_serving(client, photos)


async def test_garbage_image_bytes(client: MeshClient, photos: dict[str, bytes]) -> None:
    reply = await client.infer(MODEL, image=b"GIF89a but not really an image", use_cache=False)
    assert_error(reply, ErrorCode.INVALID_ARGUMENT, "image")
    await still_serving(client, photos)


async def test_truncated_jpeg(client: MeshClient, photos: dict[str, bytes]) -> None:
    jpeg = photos["coffee.jpg"]
    reply = await client.infer(MODEL, image=jpeg[: len(jpeg) // 2], use_cache=False)
    assert_error(reply, ErrorCode.INVALID_ARGUMENT, "truncated")
    await still_serving(client, photos)


async def test_one_pixel_image(client: MeshClient, photos: dict[str, bytes]) -> None:
    reply = await client.infer(MODEL, image=encode_png(np.zeros((1, 1, 3), np.uint8)), use_cache=False)
    assert_error(reply, ErrorCode.INVALID_ARGUMENT, "1x1")
    await still_serving(client, photos)


async def test_fifty_megapixel_image(client: MeshClient, photos: dict[str, bytes]) -> None:
    buffer = io.BytesIO()
    Image.new("L", (8660, 5774)).save(buffer, format="PNG")  # 50.0 MP, a few hundred KB compressed
    reply = await client.infer(MODEL, image=buffer.getvalue(), use_cache=False)
    assert_error(reply, ErrorCode.PAYLOAD_TOO_LARGE, "50.0 MP")
    await still_serving(client, photos)


async def test_unknown_model(client: MeshClient, photos: dict[str, bytes]) -> None:
    reply = await client.infer("resnet9000", image=photos["coffee.jpg"])
    assert_error(reply, ErrorCode.NOT_FOUND, "resnet9000", "mobilenet_v2")


async def test_unknown_version(client: MeshClient, photos: dict[str, bytes]) -> None:
    reply = await client.infer(MODEL, version="7", image=photos["coffee.jpg"])
    assert_error(reply, ErrorCode.NOT_FOUND, "'7'")


async def test_wrong_tensor_shape(client: MeshClient, photos: dict[str, bytes]) -> None:
    tensor = to_tensor("IMAGE", np.zeros((1, 100, 100, 3), np.uint8))
    assert_error(await client.infer(MODEL, tensors=[tensor]), ErrorCode.INVALID_ARGUMENT, "shape")
    await still_serving(client, photos)


async def test_wrong_tensor_dtype(client: MeshClient, photos: dict[str, bytes]) -> None:
    tensor = to_tensor("IMAGE", np.zeros((1, 224, 224, 3), np.float32))
    assert_error(await client.infer(MODEL, tensors=[tensor]), ErrorCode.INVALID_ARGUMENT, "UINT8", "FP32")
    await still_serving(client, photos)


async def test_tensor_bytes_do_not_match_shape(client: MeshClient) -> None:
    good = to_tensor("IMAGE", np.zeros((1, 224, 224, 3), np.uint8))
    bad = type(good)(name=good.name, datatype=good.datatype, shape=good.shape, data=good.data[:-10])
    assert_error(await client.infer(MODEL, tensors=[bad]), ErrorCode.INVALID_ARGUMENT, "bytes")


async def test_payload_over_the_limit(client: MeshClient, photos: dict[str, bytes]) -> None:
    reply = await client.infer(MODEL, image=b"\xff" * (5 * 1024 * 1024))
    assert_error(reply, ErrorCode.PAYLOAD_TOO_LARGE, "limit")
    await still_serving(client, photos)


async def test_expired_deadline(client: MeshClient, photos: dict[str, bytes]) -> None:
    past = str(headers.now_ms() - 1000)
    reply = await client.infer(MODEL, image=photos["coffee.jpg"], extra_headers={headers.DEADLINE: past})
    assert_error(reply, ErrorCode.DEADLINE_EXCEEDED)


async def test_deadline_too_short_for_inference(client: MeshClient, photos: dict[str, bytes]) -> None:
    """A 1 ms budget cannot be met: the answer is deadline_exceeded, exactly once, not silence."""
    reply = await client.infer(MODEL, image=photos["grace_hopper.jpg"], use_cache=False, timeout_s=0.001)
    assert_error(reply, ErrorCode.DEADLINE_EXCEEDED)


async def test_top_k_out_of_range(client: MeshClient, photos: dict[str, bytes]) -> None:
    assert_error(await client.infer(MODEL, image=photos["coffee.jpg"], top_k=0), ErrorCode.INVALID_ARGUMENT, "top_k")


async def test_error_headers_follow_nats_micro(nc: NATS, photos: dict[str, bytes]) -> None:
    body = Codec(InferRequest).encode(InferRequest(model="nope", input=ImageInput(data=photos["coffee.jpg"])))
    msg = await nc.request("natriton.v1.infer", body, timeout=10, headers={"Natriton-Request-Id": "r-404"})
    assert msg.headers is not None
    assert msg.headers["Nats-Service-Error-Code"] == "404"
    assert "nope" in msg.headers["Nats-Service-Error"]
    assert msg.headers["Natriton-Request-Id"] == "r-404"
    reply = Codec(Reply).decode(msg.data)
    assert isinstance(reply, ErrorReply) and reply.request_id == "r-404"


async def test_request_id_over_the_limit_is_refused_not_replaced(nc: NATS, photos: dict[str, bytes]) -> None:
    """The producer's id is never silently swapped for another: the request is refused, the error carries no id."""
    body = Codec(InferRequest).encode(InferRequest(model=MODEL, input=ImageInput(data=photos["coffee.jpg"])))
    msg = await nc.request("natriton.v1.infer", body, timeout=10, headers={"Natriton-Request-Id": "r" * 129})
    assert msg.headers is not None and msg.headers["Nats-Service-Error-Code"] == "400"
    assert "Natriton-Request-Id" in msg.headers["Nats-Service-Error"]
    assert msg.headers.get("Natriton-Request-Id", "") == ""
    reply = assert_error(Codec(Reply).decode(msg.data), ErrorCode.INVALID_ARGUMENT, "128", "no request id")
    assert reply.request_id == ""


async def test_request_without_type_is_refused(client: MeshClient, photos: dict[str, bytes]) -> None:
    body = b'{"model": "mobilenet_v2", "input": {"type": "image", "data": ""}}'
    assert_error(await client.send(body, json=True), ErrorCode.INVALID_ARGUMENT, "`type`")
    await still_serving(client, photos)


async def test_strings_that_are_not_utf8_are_invalid_argument(client: MeshClient, photos: dict[str, bytes]) -> None:
    """Once a UnicodeDecodeError out of the decoder: the producer got ``internal``."""
    body = Codec(InferRequest).encode(InferRequest(model="mobilenet_v2", input=TextInput(text="abcdef")))
    assert_error(await client.send(body.replace(b"abcdef", b"\xff\xfe" * 3)), ErrorCode.INVALID_ARGUMENT, "UTF-8")
    await still_serving(client, photos)


async def test_error_message_cannot_inject_headers(nc: NATS, photos: dict[str, bytes]) -> None:
    """msgspec quotes a bad tag as it came, CR LF included; the message travels in ``Nats-Service-Error``."""
    body = b'{"type": "infer_request\\r\\nX-Injected: yes", "model": "m", "input": {"type": "text", "text": "x"}}'
    msg = await nc.request("natriton.v1.infer", body, timeout=10, headers={"Content-Type": "application/json"})
    assert msg.headers is not None and msg.headers["Nats-Service-Error-Code"] == "400"
    assert "X-Injected" not in msg.headers
    assert msg.headers["Nats-Service-Error"].isprintable()


async def test_progressive_jpeg_scan_bomb_is_refused_at_once(client: MeshClient, photos: dict[str, bytes]) -> None:
    """A 130 KB progressive JPEG of 23 MP with 1,000 scans took 14 s of a decode thread; now it costs nothing."""
    buffer = io.BytesIO()
    Image.new("L", (4800, 4800), 128).save(buffer, "JPEG", progressive=True)
    data = buffer.getvalue()
    bomb = data[:-2] + data[data.rindex(b"\xff\xda") : -2] * 1000 + b"\xff\xd9"
    started = time.monotonic()
    reply = await client.infer(MODEL, image=bomb, use_cache=False)
    assert_error(reply, ErrorCode.PAYLOAD_TOO_LARGE, "scans")
    assert time.monotonic() - started < 5.0
    await still_serving(client, photos)
