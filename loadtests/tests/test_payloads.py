"""Request bodies: fixed tensors, repeated and fresh images, reply classification."""

from __future__ import annotations

import io

import msgspec
import numpy as np
import pytest
from PIL import Image

from loadtests.harness.loadgen import classify
from loadtests.harness.payloads import body_factory, noop_body, random_array, unique_jpeg
from loadtests.harness.scenario import Payload, TensorPayload
from natriton.errors import ErrorCode
from natriton.messages import (
    Classification,
    ClassScore,
    Codec,
    ErrorReply,
    ImageInput,
    InferRequest,
    InferResponse,
    Reply,
    TensorInput,
)
from natriton_dev.images import encode_jpeg

REQUEST: Codec[InferRequest] = Codec(InferRequest)
REPLY: Codec[Reply] = Codec(Reply)


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    pixels = (np.arange(48 * 64 * 3) % 251).astype(np.uint8).reshape(48, 64, 3)
    return encode_jpeg(pixels)


def test_unique_jpeg_keeps_the_pixels_and_changes_the_bytes(jpeg: bytes) -> None:
    a, b = unique_jpeg(jpeg, 1), unique_jpeg(jpeg, 2)
    assert len({jpeg, a, b}) == 3
    original = np.asarray(Image.open(io.BytesIO(jpeg)))
    for variant in (a, b):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(variant))), original)
    with pytest.raises(ValueError):
        unique_jpeg(b"\x89PNG....", 1)


def test_tensor_payload_is_the_same_body_every_time() -> None:
    spec = TensorPayload("IMAGE", "UINT8", (1, 4, 4, 3))
    make = body_factory("mobilenet_v2", Payload(tensor=spec), {})
    body, _ = make(0)
    assert make(99) == (body, "")
    request = REQUEST.decode(body)
    assert request.model == "mobilenet_v2"
    assert request.use_cache is False
    assert isinstance(request.input, TensorInput)
    tensor = request.input.tensors[0]
    assert tensor.shape == (1, 4, 4, 3)
    assert tensor.data == random_array(spec).tobytes()  # what direct Triton gets too


def test_hit_ratio_mixes_repeated_and_fresh_images(jpeg: bytes) -> None:
    make = body_factory("m", Payload(image="p.jpg", use_cache=True), {"p.jpg": jpeg}, hit_ratio=0.75)
    made = [make(i) for i in range(8)]
    assert [tag for _, tag in made].count("hit") == 6
    hits = {body for body, tag in made if tag == "hit"}
    fresh = [body for body, tag in made if tag == "fresh"]
    assert len(hits) == 1
    assert len(set(fresh)) == 2 and not hits & set(fresh)
    request = REQUEST.decode(fresh[0])
    assert isinstance(request.input, ImageInput) and request.use_cache


def test_unknown_image_is_refused(jpeg: bytes) -> None:
    with pytest.raises(ValueError, match="unknown image"):
        body_factory("m", Payload(image="nope.jpg"), {"p.jpg": jpeg})


def test_noop_body() -> None:
    request = REQUEST.decode(noop_body("noop", 4096))
    assert isinstance(request.input, TensorInput)
    (tensor,) = request.input.tensors
    assert (tensor.name, tensor.datatype, tensor.shape, len(tensor.data)) == ("DATA", "UINT8", (1, 4096), 4096)
    assert request.use_cache is False


def test_replies_are_classified_without_decoding_results() -> None:
    hit = InferResponse(
        request_id="r",
        model="m",
        version="1",
        cached=True,
        result=Classification(classes=(ClassScore(index=1, label="x", score=0.5),)),
    )
    assert classify(REPLY.encode(hit)) == ("ok", "hit")
    assert classify(REPLY.encode(msgspec.structs.replace(hit, cached=False))) == ("ok", "miss")
    error = ErrorReply(request_id="r", code=ErrorCode.OVERLOADED, message="busy", retry_after_ms=100)
    assert classify(REPLY.encode(error)) == ("overloaded", "")
    assert classify(b"\xc1 not msgpack") == ("bad_reply", "")
    assert classify(msgspec.msgpack.encode({"type": "what"})) == ("bad_reply", "")
