"""Ready-made tensors through the real stack with the shared-memory hand-off (decision 0011): ingest hands each
150 KB tensor to the router through ``/dev/shm`` while every router copy shares it, answers are those of the
tensor sent inline, and a router copy that does not share the memory turns the hand-off off until it leaves."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import numpy as np
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from PIL import Image

from natriton.messages import Classification, InferResponse, Reply
from natriton.tensors import to_tensor
from natriton_client.aio import MeshClient
from natriton_dev.mesh import ServiceProcess
from natriton_dev.stack import LocalStack
from tests.integration.conftest import model_repository_of

pytestmark = pytest.mark.asyncio(loop_scope="session")
MODEL = "mobilenet_v2"


@pytest.fixture(scope="module")
def handoff_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    workdir: Path = tmp_path_factory.mktemp("handoff")
    with LocalStack(workdir, model_repository=model_repository_of(workdir, MODEL)) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def mesh(handoff_stack: LocalStack) -> AsyncIterator[MeshClient]:
    client = await MeshClient.connect(handoff_stack.nats_url)
    yield client
    await client.close()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def raw(handoff_stack: LocalStack) -> AsyncIterator[NATS]:
    connection = await nats.connect(handoff_stack.nats_url)
    yield connection
    await connection.drain()


def pictures(photos: dict[str, bytes]) -> list[np.ndarray]:
    """Each sample photo centre-cropped and resized to the model's 224x224 uint8 input, and a mirrored copy, by name
    (astronaut, chelsea, coffee, grace_hopper)."""
    out = []
    for _, data in sorted(photos.items()):
        image = Image.open(io.BytesIO(data)).convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        square = image.crop((left, top, left + side, top + side)).resize((224, 224), Image.Resampling.BILINEAR)
        pixels = np.asarray(square, dtype=np.uint8)
        out += [pixels[np.newaxis], np.ascontiguousarray(pixels[:, ::-1])[np.newaxis]]
    return out


async def app_stats(nc: NATS, service: str) -> list[dict[str, Any]]:
    """Every copy's app numbers from ``$SRV.STATS`` (micro answers once per copy)."""
    inbox = nc.new_inbox()
    answers: list[dict[str, Any]] = []
    subscription = await nc.subscribe(inbox)
    await nc.publish(f"$SRV.STATS.natriton-{service}", b"", reply=inbox)
    deadline = time.monotonic() + 1.0
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await subscription.next_msg(timeout=left)
        except nats.errors.TimeoutError:
            break
        answers.append(json.loads(msg.data)["endpoints"][0]["data"]["app"])
    await subscription.unsubscribe()
    return answers


def top5(reply: Reply) -> list[tuple[int, float]]:
    assert isinstance(reply, InferResponse) and isinstance(reply.result, Classification), reply
    return [(c.index, round(c.score, 4)) for c in reply.result.classes]


async def ask_all(mesh: MeshClient, tensors: list[np.ndarray]) -> list[list[tuple[int, float]]]:
    replies = await asyncio.gather(
        *(mesh.infer(MODEL, tensors=[to_tensor("IMAGE", t)], use_cache=False) for t in tensors)
    )
    return [top5(reply) for reply in replies]


async def until_handoff_is(raw: NATS, mesh: MeshClient, tensor: np.ndarray, on: bool) -> None:
    """Send one request at a time until ingest hands off (or does not), as its heartbeat watch settles."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        before = (await app_stats(raw, "ingest"))[0]["handoff"]["handed"]
        await mesh.infer(MODEL, tensors=[to_tensor("IMAGE", tensor)], use_cache=False)
        if ((await app_stats(raw, "ingest"))[0]["handoff"]["handed"] > before) == on:
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"the hand-off did not turn {'on' if on else 'off'}")


async def test_tensors_go_through_shared_memory_and_get_the_inline_answers(
    handoff_stack: LocalStack, mesh: MeshClient, raw: NATS, photos: dict[str, bytes]
) -> None:
    tensors = pictures(photos)
    await until_handoff_is(raw, mesh, tensors[0], on=True)
    (ingest,) = await app_stats(raw, "ingest")
    (router,) = await app_stats(raw, "router")
    through_memory = await ask_all(mesh, tensors)
    (ingest_after,) = await app_stats(raw, "ingest")
    (router_after,) = await app_stats(raw, "router")
    assert ingest_after["handoff"]["handed"] - ingest["handoff"]["handed"] == len(tensors)
    assert router_after["handoff"]["read"] - router["handoff"]["read"] == len(tensors)
    assert router_after["handoff"]["stale"] == 0
    assert ingest_after["handoff"]["in_use"] == 0  # every slot given back with its answer

    # a router copy that does not share the memory joins: every tensor goes inline until it leaves
    env = handoff_stack.env() | {"NATRITON_HANDOFF": "off"}
    other = ServiceProcess("router", handoff_stack.workdir / "services", env, copy=1)
    other.start()
    try:
        await asyncio.to_thread(other.wait_ready, 60.0)
        await until_handoff_is(raw, mesh, tensors[0], on=False)
        (before,) = await app_stats(raw, "ingest")
        inline = await ask_all(mesh, tensors)
        (after,) = await app_stats(raw, "ingest")
        assert after["handoff"]["handed"] == before["handoff"]["handed"]
        assert after["handoff"]["inline_other_host"] - before["handoff"]["inline_other_host"] == len(tensors)
    finally:
        await asyncio.to_thread(other.stop, 10.0)
    assert inline == through_memory  # the same answers either way
    assert [answer[0][0] for answer in inline[4:6]] == [967, 967]  # coffee.jpg and its mirror image: espresso

    await until_handoff_is(raw, mesh, tensors[0], on=True)  # the other copy left: shared memory again


async def test_decoded_jpegs_go_from_preprocess_through_shared_memory(
    mesh: MeshClient, raw: NATS, photos: dict[str, bytes]
) -> None:
    """Preprocess hands each decoded 150 KB tensor to the router in its own slots (freed by the router's read mark)."""
    deadline = time.monotonic() + 15
    while not (await app_stats(raw, "preprocess"))[0]["handoff"].get("handed") and time.monotonic() < deadline:
        await mesh.infer(MODEL, image=photos["coffee.jpg"], use_cache=False)  # until preprocess's watch settles
    (before,) = await app_stats(raw, "preprocess")
    (router_before,) = await app_stats(raw, "router")
    names = sorted(photos) * 3
    replies = await asyncio.gather(*(mesh.infer(MODEL, image=photos[n], use_cache=False) for n in names))
    (after,) = await app_stats(raw, "preprocess")
    (router_after,) = await app_stats(raw, "router")
    assert after["handoff"]["handed"] - before["handoff"]["handed"] == len(names)
    assert router_after["handoff"]["read"] - router_before["handoff"]["read"] == len(names)
    assert router_after["handoff"]["stale"] == 0
    assert after["handoff"]["segments"] <= len(names) + 16  # slots come back: no new segment per request forever
    for name, reply in zip(names, replies, strict=True):
        if name == "coffee.jpg":
            assert top5(reply)[0][0] == 967
