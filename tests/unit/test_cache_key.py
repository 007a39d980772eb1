"""Result-cache keys, and the cache degrading to "no cache" when Redis is away."""

from __future__ import annotations

import logging
import re
import time

import numpy as np
import pytest
import xxhash

from natriton.cache import KEY_PREFIX, ResultCache, cache_key
from natriton.messages import ImageInput, Tensor, TensorInput, TextInput
from natriton.tensors import to_tensor

IMAGE = ImageInput(data=b"\xff\xd8\xff\xe0 some jpeg bytes")


def _tensors(array: np.ndarray, name: str = "x") -> TensorInput:
    return TensorInput(tensors=(to_tensor(name, array),))


def test_key_is_stable_and_readable() -> None:
    key = cache_key("mobilenet_v2", "1", IMAGE, 5)
    assert key == cache_key("mobilenet_v2", "1", ImageInput(data=bytes(IMAGE.data)), 5)
    assert re.fullmatch(rf"{KEY_PREFIX}:mobilenet_v2:1:k5:[0-9a-f]{{32}}", key)
    assert key.startswith("natriton:v1:result:")


def test_key_is_pinned_across_releases() -> None:
    # Changing the key scheme silently invalidates every cached result; do it on purpose only.
    expected = xxhash.xxh3_128(b"image\0abc").hexdigest()
    assert cache_key("m", "1", ImageInput(data=b"abc"), 5) == f"natriton:v1:result:m:1:k5:{expected}"


@pytest.mark.parametrize(
    ("model", "version", "payload", "top_k"),
    [
        ("resnet50", "1", IMAGE, 5),
        ("mobilenet_v2", "2", IMAGE, 5),
        ("mobilenet_v2", "1", IMAGE, 3),
        ("mobilenet_v2", "1", ImageInput(data=IMAGE.data + b"\0"), 5),
        ("mobilenet_v2", "1", ImageInput(data=IMAGE.data[:-1] + b"X"), 5),
        ("mobilenet_v2", "1", ImageInput(data=b""), 5),
    ],
)
def test_key_differs_when_anything_that_shapes_the_answer_differs(
    model: str, version: str, payload: ImageInput, top_k: int
) -> None:
    assert cache_key(model, version, payload, top_k) != cache_key("mobilenet_v2", "1", IMAGE, 5)


def test_image_and_tensor_inputs_with_the_same_bytes_differ() -> None:
    data = np.frombuffer(IMAGE.data, dtype=np.uint8).reshape(1, -1)
    assert cache_key("m", "1", IMAGE, 5) != cache_key("m", "1", _tensors(data), 5)


def test_tensor_key_is_stable() -> None:
    array = np.arange(12, dtype=np.float32).reshape(1, 12)
    assert cache_key("m", "1", _tensors(array), 5) == cache_key("m", "1", _tensors(array.copy()), 5)


def test_tensor_key_covers_shape_dtype_and_name() -> None:
    base = np.arange(12, dtype=np.uint8)
    same_bytes = [
        _tensors(base.reshape(1, 12)),
        _tensors(base.reshape(1, 3, 4)),
        _tensors(base.reshape(1, 4, 3)),
        _tensors(base.reshape(2, 6)),
        TensorInput(tensors=(Tensor(name="x", datatype="INT8", shape=(1, 12), data=base.tobytes()),)),
        _tensors(base.reshape(1, 12), name="y"),
    ]
    keys = {cache_key("m", "1", payload, 5) for payload in same_bytes}
    assert len(keys) == len(same_bytes)


def test_tensor_key_covers_data() -> None:
    a = np.zeros((1, 8), dtype=np.float32)
    b = a.copy()
    b[0, 7] = 1e-30
    assert cache_key("m", "1", _tensors(a), 5) != cache_key("m", "1", _tensors(b), 5)


def test_tensor_key_keeps_input_boundaries() -> None:
    # moving bytes from one input to the next must change the key
    one = TensorInput(
        tensors=(
            Tensor(name="a", datatype="UINT8", shape=(1, 2), data=b"\1\2"),
            Tensor(name="b", datatype="UINT8", shape=(1, 1), data=b"\3"),
        )
    )
    two = TensorInput(
        tensors=(
            Tensor(name="a", datatype="UINT8", shape=(1, 1), data=b"\1"),
            Tensor(name="b", datatype="UINT8", shape=(1, 2), data=b"\2\3"),
        )
    )
    assert cache_key("m", "1", one, 5) != cache_key("m", "1", two, 5)


def test_text_key_is_stable_and_pinned() -> None:
    key = cache_key("minilm", "1", TextInput(text="héllo"), 5)
    assert key == cache_key("minilm", "1", TextInput(text="héllo"), 5)
    expected = xxhash.xxh3_128("text\0héllo".encode()).hexdigest()
    assert key == f"natriton:v1:result:minilm:1:k5:{expected}"


@pytest.mark.parametrize("other", ["hello", "héllo ", "Héllo", "héll", "hello world", ""])
def test_text_key_differs_by_text(other: str) -> None:
    assert cache_key("minilm", "1", TextInput(text=other), 5) != cache_key("minilm", "1", TextInput(text="héllo"), 5)


def test_text_key_differs_by_model_and_version() -> None:
    text = TextInput(text="a sentence")
    keys = {cache_key(m, v, text, 5) for m, v in [("minilm", "1"), ("minilm", "2"), ("mpnet", "1")]}
    assert len(keys) == 3


def test_text_and_image_with_the_same_bytes_differ() -> None:
    text = "some bytes that could be an image"
    image_key = cache_key("m", "1", ImageInput(data=text.encode()), 5)
    text_key = cache_key("m", "1", TextInput(text=text), 5)
    assert text_key != image_key
    tensor_key = cache_key("m", "1", _tensors(np.frombuffer(text.encode(), dtype=np.uint8).reshape(1, -1)), 5)
    assert tensor_key not in {text_key, image_key}


# ------------------------------------------------------------------------------------------------
# ResultCache without Redis
# ------------------------------------------------------------------------------------------------
async def test_cache_degrades_to_no_cache_when_redis_is_down(caplog: pytest.LogCaptureFixture) -> None:
    cache = ResultCache("redis://127.0.0.1:1/0", ttl_s=5, timeout_s=0.05)  # nothing listens on port 1
    try:
        with caplog.at_level(logging.WARNING, logger="natriton.cache"):
            started = time.perf_counter()
            assert await cache.get("natriton:v1:result:x") is None
            assert await cache.set("natriton:v1:result:x", b"value") is False
            assert await cache.set("natriton:v1:result:x", b"value", ttl_s=1) is False
            assert await cache.get("natriton:v1:result:x") is None
            assert await cache.ping() is False
            elapsed = time.perf_counter() - started
        assert elapsed < 2.0  # failing fast, not hanging on retries
        assert cache.failures == 4
        assert cache.hits == 0 and cache.misses == 0
        warnings = [r for r in caplog.records if "result cache" in r.getMessage()]
        assert len(warnings) == 1  # rate-limited
        assert "continuing without cache" in warnings[0].getMessage()
    finally:
        await cache.close()
