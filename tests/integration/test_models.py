"""The three real models (and the no-op) through the whole mesh, with real images and sentences."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data as skdata

from natriton.messages import Detections, Embedding, InferResponse, RawOutputs, Reply
from natriton.tensors import to_array, to_tensor
from natriton_client.aio import MeshClient
from natriton_dev.images import encode_jpeg

pytestmark = pytest.mark.asyncio(loop_scope="session")


def result_of(reply: Reply) -> object:
    assert isinstance(reply, InferResponse), reply
    return reply.result


async def embed(client: MeshClient, text: str) -> np.ndarray:
    result = result_of(await client.infer("minilm_l6_v2", text=text))
    assert isinstance(result, Embedding)
    vector = np.asarray(to_array(result.vector), dtype=np.float32)
    assert vector.shape == (384,)
    return vector


async def test_face_detector_finds_the_astronauts_face(client: MeshClient) -> None:
    image = encode_jpeg(skdata.astronaut())  # type: ignore[no-untyped-call]
    result = result_of(await client.infer("face_detector", image=image, use_cache=False))
    assert isinstance(result, Detections)
    assert (result.image_width, result.image_height) == (512, 512)
    assert len(result.detections) == 1, result.detections
    face = result.detections[0]
    assert face.label == "face" and face.score > 0.9
    assert np.allclose(face.box, (179, 57, 271, 177), atol=8), face.box


async def test_face_detector_boxes_scale_to_the_original_image(client: MeshClient) -> None:
    big = np.kron(skdata.astronaut(), np.ones((2, 2, 1), dtype=np.uint8))  # type: ignore[no-untyped-call]
    result = result_of(await client.infer("face_detector", image=encode_jpeg(big), use_cache=False))
    assert isinstance(result, Detections) and (result.image_width, result.image_height) == (1024, 1024)
    assert np.allclose(result.detections[0].box, (358, 114, 542, 354), atol=16), result.detections


async def test_face_detector_finds_nothing_in_coffee(client: MeshClient, photos: dict[str, bytes]) -> None:
    result = result_of(await client.infer("face_detector", image=photos["coffee.jpg"], use_cache=False))
    assert isinstance(result, Detections) and result.detections == ()


async def test_sentence_embeddings_are_semantic(client: MeshClient) -> None:
    food = await embed(client, "A man is eating food.")
    bread = await embed(client, "A man is eating a piece of bread.")
    baby = await embed(client, "The girl is carrying a baby.")
    assert abs(float(np.linalg.norm(food)) - 1.0) < 1e-4, "vectors are L2-normalised"
    assert float(food @ bread) > 0.6
    assert float(food @ baby) < 0.3


async def test_empty_text_is_a_typed_error(client: MeshClient) -> None:
    reply = await client.infer("minilm_l6_v2", text="   ")
    assert not isinstance(reply, InferResponse)
    assert reply.code.value == "invalid_argument"


@pytest.mark.parametrize("size", [4096, 153_600])
async def test_noop_model_round_trip(client: MeshClient, size: int) -> None:
    payload = np.random.default_rng(size).integers(0, 255, (1, size), dtype=np.uint8)
    result = result_of(await client.infer("noop", tensors=[to_tensor("DATA", payload)], use_cache=False))
    assert isinstance(result, RawOutputs)
    assert to_array(result.tensors[0]).tolist() == [[size]]
