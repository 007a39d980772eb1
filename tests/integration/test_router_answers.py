"""The router answers the models whose answer is cheap to make (decision 0012), with two copies of every service.

A classifier's request passes ingest → preprocess → router and the router sends the answer to the owning ingest: it
needs no postprocess copy, the cache is written all the same, and a router copy killed under load costs no request
(ingest sends what it held again). A detector's answer is still made by postprocess, so without a postprocess copy
it is refused at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from natriton.tensors import to_array, to_tensor
from natriton_client import AsyncClient, Unavailable
from natriton_client.protocol import Detections, RawOutputs
from natriton_dev.stack import LocalStack
from tests.integration.conftest import model_repository_of
from tests.integration.test_crash_recovery import (
    explained,
    heard,
    kill_9_under_load_costs_no_request,
    producer_without_retries,
    restart,
    top_class,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")
CLASSIFIER, DETECTOR, RAW = "mobilenet_v2", "face_detector", "noop"
COPIES = {"ingest": 2, "preprocess": 2, "router": 2, "postprocess": 2}


@pytest.fixture(scope="module")
def answers_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The default settings: ingest asks the router for every answer but a detector's."""
    workdir: Path = tmp_path_factory.mktemp("router-answers-stack")
    repository = model_repository_of(workdir, CLASSIFIER, DETECTOR, RAW)
    with LocalStack(workdir, model_repository=repository, copies=COPIES) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def producer(answers_stack: LocalStack) -> AsyncIterator[AsyncClient]:
    async with producer_without_retries(answers_stack) as client:
        yield client


async def test_with_every_postprocess_copy_gone_the_router_still_answers_and_caches(
    answers_stack: LocalStack, producer: AsyncClient, photos: dict[str, bytes]
) -> None:
    await heard(answers_stack, "postprocess", COPIES["postprocess"])
    try:
        for i in range(COPIES["postprocess"]):
            await asyncio.to_thread(answers_stack.service("postprocess", i).stop, 20.0)
        await heard(answers_stack, "postprocess", 0)

        image = await explained(answers_stack, producer.infer(CLASSIFIER, image=photos["coffee.jpg"], use_cache=False))
        assert top_class(image) == 967 and not image.cached  # espresso
        data = to_tensor("DATA", np.arange(4096, dtype=np.uint8).reshape(1, 4096))
        raw = await explained(answers_stack, producer.infer(RAW, tensors=[data], use_cache=False))
        assert isinstance(raw.result, RawOutputs) and to_array(raw.result.tensors[0]).tolist() == [[4096]], raw

        first = await explained(answers_stack, producer.infer(CLASSIFIER, image=photos["grace_hopper.jpg"]))
        again = await explained(answers_stack, producer.infer(CLASSIFIER, image=photos["grace_hopper.jpg"]))
        assert not first.cached and again.cached, "the router wrote its answer to the cache before replying"
        assert again.result == first.result and again.version == first.version

        with pytest.raises(Unavailable, match="no live copy of postprocess"):
            await producer.infer(DETECTOR, image=photos["grace_hopper.jpg"], use_cache=False)
    finally:
        for i in range(COPIES["postprocess"]):
            await restart(answers_stack, "postprocess", i)
        await heard(answers_stack, "postprocess", COPIES["postprocess"])
    faces = await explained(answers_stack, producer.infer(DETECTOR, image=photos["grace_hopper.jpg"], use_cache=False))
    assert isinstance(faces.result, Detections) and faces.result.detections, faces


async def test_kill_9_of_a_router_copy_that_answers_costs_no_request(
    answers_stack: LocalStack, producer: AsyncClient, photos: dict[str, bytes]
) -> None:
    await kill_9_under_load_costs_no_request(answers_stack, producer, photos, "router")
