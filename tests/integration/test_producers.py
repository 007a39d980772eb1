"""Many producers at once, as they really behave: reused request ids, fire-and-forget with their own results
subjects, batches of tensors, odd image modes, sloppy requests. Real servers, real models, real photos."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from PIL import Image

from natriton.messages import (
    Batch,
    Classification,
    Codec,
    Detections,
    Embedding,
    ErrorReply,
    ImageInput,
    InferRequest,
    InferResponse,
    Reply,
)
from natriton.tensors import to_tensor
from natriton_client.aio import MeshClient
from natriton_dev.stack import LocalStack

pytestmark = pytest.mark.asyncio(loop_scope="session")
REQUESTS: Codec[InferRequest] = Codec(InferRequest)
REPLIES: Codec[Reply] = Codec(Reply)
ESPRESSO = 967
CAT_CLASSES = range(281, 286)


def top_class(reply: Reply) -> int:
    assert isinstance(reply, InferResponse), reply
    assert isinstance(reply.result, Classification), reply.result
    return reply.result.classes[0].index


def square_pixels(data: bytes, size: int) -> np.ndarray:
    """A photo centre-cropped to a square and resized: the uint8 HWC pixels a producer would send."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    side = min(width, height)
    box = ((width - side) // 2, (height - side) // 2, (width + side) // 2, (height + side) // 2)
    return np.asarray(image.crop(box).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


@pytest_asyncio.fixture(loop_scope="session")
async def second_producer(stack: LocalStack) -> AsyncIterator[MeshClient]:
    """Another producer with its own NATS connection."""
    producer = await MeshClient.connect(stack.nats_url)
    yield producer
    await producer.close()


# ------------------------------------------------------------------ defect 1: ids chosen by producers
async def test_producers_reusing_one_request_id_each_get_their_own_answer(
    client: MeshClient, second_producer: MeshClient, photos: dict[str, bytes]
) -> None:
    """Two producers send the same id at the same moment (cameras reuse ids): an image classification and a
    text embedding. Each gets exactly its own kind of answer, with its id echoed untouched."""
    rounds = 12
    images = [
        client.infer("mobilenet_v2", image=photos["coffee.jpg"], request_id=f"cam-1-frame-{i}", use_cache=False)
        for i in range(rounds)
    ]
    texts = [
        second_producer.infer(
            "minilm_l6_v2", text=f"camera one, frame {i}", request_id=f"cam-1-frame-{i}", use_cache=False
        )
        for i in range(rounds)
    ]
    replies = await asyncio.gather(*(x for pair in zip(images, texts, strict=True) for x in pair))
    for i in range(rounds):
        image_reply, text_reply = replies[2 * i], replies[2 * i + 1]
        assert top_class(image_reply) == ESPRESSO
        assert isinstance(image_reply, InferResponse) and image_reply.request_id == f"cam-1-frame-{i}"
        assert isinstance(text_reply, InferResponse) and isinstance(text_reply.result, Embedding), text_reply
        assert text_reply.request_id == f"cam-1-frame-{i}"


async def test_one_producer_reusing_an_id_for_different_inputs(client: MeshClient, photos: dict[str, bytes]) -> None:
    """Even one producer reusing an id for two different photos at once gets each photo's own answer."""
    coffee, cat = await asyncio.gather(
        client.infer("mobilenet_v2", image=photos["coffee.jpg"], request_id="same", use_cache=False),
        client.infer("mobilenet_v2", image=photos["chelsea.png"], request_id="same", use_cache=False),
    )
    assert top_class(coffee) == ESPRESSO
    assert top_class(cat) in CAT_CLASSES


async def test_request_id_over_the_limit_is_refused(client: MeshClient, photos: dict[str, bytes]) -> None:
    reply = await client.infer("mobilenet_v2", image=photos["coffee.jpg"], request_id="x" * 129)
    assert isinstance(reply, ErrorReply) and reply.code == "invalid_argument"
    assert "Natriton-Request-Id" in reply.message


# ------------------------------------------------------------------ defect 2: fire-and-forget destinations
async def _collect(nc: NATS, subject: str) -> tuple[asyncio.Queue[Msg], object]:
    received: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_message(msg: Msg) -> None:
        received.put_nowait(msg)

    return received, await nc.subscribe(subject, cb=on_message)


async def test_fire_and_forget_answers_go_where_the_producer_says(nc: NATS, photos: dict[str, bytes]) -> None:
    mine, sub = await _collect(nc, "camera.7.answers")
    theirs, other_sub = await _collect(nc, "camera.8.answers")
    shared, shared_sub = await _collect(nc, "natriton.v1.results.>")
    request = InferRequest(model="mobilenet_v2", input=ImageInput(data=photos["chelsea.png"]), use_cache=False)
    headers = {"Natriton-Request-Id": "ff-1", "Natriton-Results-To": "camera.7.answers"}
    await nc.publish("natriton.v1.infer", REQUESTS.encode(request), headers=headers)
    msg = await asyncio.wait_for(mine.get(), timeout=15)
    reply = REPLIES.decode(msg.data)
    assert isinstance(reply, InferResponse) and reply.request_id == "ff-1"
    assert msg.headers and msg.headers["Natriton-Request-Id"] == "ff-1"
    assert top_class(reply) in CAT_CLASSES
    await asyncio.sleep(0.3)
    assert theirs.empty() and shared.empty(), "another producer (or the shared subject) saw this answer"
    for s in (sub, other_sub, shared_sub):
        await s.unsubscribe()  # type: ignore[attr-defined]


async def test_fire_and_forget_errors_go_to_the_same_place(nc: NATS) -> None:
    mine, sub = await _collect(nc, "camera.9.answers")
    request = InferRequest(model="no_such_model", input=ImageInput(data=b"\x89PNG"))
    headers = {"Natriton-Request-Id": "ff-err", "Natriton-Results-To": "camera.9.answers"}
    await nc.publish("natriton.v1.infer", REQUESTS.encode(request), headers=headers)
    await nc.publish("natriton.v1.infer", b"not msgpack at all", headers={**headers, "Natriton-Request-Id": "ff-bad"})
    answers = [await asyncio.wait_for(mine.get(), timeout=10) for _ in range(2)]
    await sub.unsubscribe()  # type: ignore[attr-defined]
    by_id = {m.headers["Natriton-Request-Id"]: (m, REPLIES.decode(m.data)) for m in answers if m.headers}
    assert set(by_id) == {"ff-err", "ff-bad"}
    for msg, reply in by_id.values():
        assert isinstance(reply, ErrorReply)
        assert msg.headers and msg.headers["Nats-Service-Error-Code"] in ("400", "404")
    assert by_id["ff-err"][1].code == "not_found"  # type: ignore[union-attr]
    assert by_id["ff-bad"][1].code == "invalid_argument"  # type: ignore[union-attr]


async def test_shared_results_subject_is_opt_in(nc: NATS, photos: dict[str, bytes]) -> None:
    shared, sub = await _collect(nc, "natriton.v1.results.>")
    request = InferRequest(model="mobilenet_v2", input=ImageInput(data=photos["coffee.jpg"]), use_cache=False)
    body = REQUESTS.encode(request)
    await nc.publish("natriton.v1.infer", body, headers={"Natriton-Request-Id": "not-opted-in"})
    await nc.publish(
        "natriton.v1.infer", body, headers={"Natriton-Request-Id": "opted-in", "Natriton-Results-To": "shared"}
    )
    unknown = REQUESTS.encode(InferRequest(model="nope", input=ImageInput(data=b"x")))
    await nc.publish(
        "natriton.v1.infer", unknown, headers={"Natriton-Request-Id": "e", "Natriton-Results-To": "shared"}
    )
    got = [await asyncio.wait_for(shared.get(), timeout=15) for _ in range(2)]
    await asyncio.sleep(1.0)  # the request that did not opt in must not show up meanwhile
    await sub.unsubscribe()  # type: ignore[attr-defined]
    assert shared.empty()
    subjects = {m.headers["Natriton-Request-Id"]: m.subject for m in got if m.headers}
    assert subjects == {"opted-in": "natriton.v1.results.mobilenet_v2", "e": "natriton.v1.results.nope"}


async def test_results_to_the_mesh_internals_is_refused(nc: NATS, photos: dict[str, bytes]) -> None:
    """A producer cannot make ingest publish into the mesh's own subjects (spoofing replies to other producers)."""
    internal, sub = await _collect(nc, "natriton.v1.internal.>")
    request = InferRequest(model="mobilenet_v2", input=ImageInput(data=photos["coffee.jpg"]), use_cache=False)
    target = "natriton.v1.internal.replies.someone"
    await nc.publish("natriton.v1.infer", REQUESTS.encode(request), headers={"Natriton-Results-To": target})
    await asyncio.sleep(1.0)
    await sub.unsubscribe()  # type: ignore[attr-defined]
    while not internal.empty():
        assert internal.get_nowait().subject != target


# ------------------------------------------------------------------ defect 3: batches and image modes
async def test_a_batch_of_two_images_gets_one_answer_per_item_in_order(
    client: MeshClient, photos: dict[str, bytes]
) -> None:
    pixels = np.stack([square_pixels(photos["coffee.jpg"], 224), square_pixels(photos["chelsea.png"], 224)])
    reply = await client.infer("mobilenet_v2", tensors=[to_tensor("IMAGE", pixels)], use_cache=False)
    assert isinstance(reply, InferResponse) and isinstance(reply.result, Batch), reply
    first, second = reply.items()
    assert isinstance(first, Classification) and first.classes[0].index == ESPRESSO
    assert isinstance(second, Classification) and second.classes[0].index in CAT_CLASSES


async def test_a_batch_for_the_face_detector_gets_detections_per_item(
    client: MeshClient, photos: dict[str, bytes]
) -> None:
    astronaut, coffee = square_pixels(photos["astronaut.jpg"], 300), square_pixels(photos["coffee.jpg"], 300)
    pixels = np.stack([astronaut, coffee])[..., ::-1].copy()  # BGR, as the model declares
    reply = await client.infer("face_detector", tensors=[to_tensor("IMAGE", pixels)], use_cache=False)
    assert isinstance(reply, InferResponse) and isinstance(reply.result, Batch), reply
    faces, no_faces = reply.items()
    assert isinstance(faces, Detections) and len(faces.detections) == 1
    assert isinstance(no_faces, Detections) and len(no_faces.detections) == 0


async def test_sixteen_bit_grayscale_png_is_classified_like_eight_bit(
    client: MeshClient, photos: dict[str, bytes]
) -> None:
    gray8 = np.asarray(Image.open(io.BytesIO(photos["coffee.jpg"])).convert("L"), dtype=np.uint8)
    encoded = {}
    for name, image in (
        ("8-bit", Image.fromarray(gray8)),
        ("16-bit", Image.fromarray(gray8.astype(np.uint16) * 257)),
    ):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded[name] = buffer.getvalue()
    assert Image.open(io.BytesIO(encoded["16-bit"])).mode.startswith("I")
    replies = {n: await client.infer("mobilenet_v2", image=d, use_cache=False) for n, d in encoded.items()}
    assert top_class(replies["16-bit"]) == top_class(replies["8-bit"]) == ESPRESSO


# ------------------------------------------------------------------ sloppy requests
async def test_a_request_without_its_type_tag_is_refused(nc: NATS) -> None:
    body = json.dumps({"model": "mobilenet_v2", "input": {"type": "text", "text": "hello"}}).encode()
    msg = await nc.request("natriton.v1.infer", body, timeout=10, headers={"Content-Type": "application/json"})
    reply = json.loads(msg.data)
    assert reply["type"] == "error" and reply["code"] == "invalid_argument"
    assert "type" in reply["message"]


async def test_a_model_with_a_misspelled_parameter_is_refused_by_name(client: MeshClient) -> None:
    """`natriton.cache_ttl` (not `cache_ttl_s`) in its config: found when the catalog is published, not per request."""
    reply = await client.infer("misconfigured", text="anything")
    assert isinstance(reply, ErrorReply) and reply.code == "not_found", reply
    assert "misconfigured" in reply.message and "cache_ttl" in reply.message


async def test_the_second_classifier_needs_no_code(client: MeshClient, photos: dict[str, bytes]) -> None:
    """efficientnet_lite0 is only files in model_repository/ (config, labels, export step)."""
    reply = await client.infer("efficientnet_lite0", image=photos["coffee.jpg"], use_cache=False)
    assert top_class(reply) == ESPRESSO
    assert isinstance(reply, InferResponse) and isinstance(reply.result, Classification)
    assert reply.result.classes[0].label == "espresso"


async def test_text_for_an_image_model_is_a_clear_error(client: MeshClient) -> None:
    reply = await client.infer("mobilenet_v2", text="a cup of coffee")
    assert isinstance(reply, ErrorReply) and reply.code == "invalid_argument"
    assert "does not take text" in reply.message
