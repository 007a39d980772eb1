"""Request bodies for the load tests: images, random tensors, fresh (uncached) copies of an image."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping

import numpy as np

from natriton.messages import Codec, ImageInput, InferRequest, Tensor, TensorInput
from natriton.tensors import TRITON_TO_NUMPY

from .scenario import Payload, TensorPayload
from .schedule import is_hit

REQUESTS: Codec[InferRequest] = Codec(InferRequest)
SOI = b"\xff\xd8"
COM = b"\xff\xfe"


def random_array(spec: TensorPayload, seed: int = 7) -> np.ndarray:
    """Deterministic random data of the tensor's shape and datatype."""
    dtype = TRITON_TO_NUMPY.get(spec.datatype)
    if dtype is None:
        raise ValueError(f"unknown datatype {spec.datatype!r}")
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=math.prod(spec.shape) * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(spec.shape)


def tensor_of(spec: TensorPayload, seed: int = 7) -> Tensor:
    """A wire tensor with deterministic random bytes."""
    array = random_array(spec, seed)
    return Tensor(name=spec.name, datatype=spec.datatype, shape=tuple(spec.shape), data=array.tobytes())


def unique_jpeg(jpeg: bytes, n: int) -> bytes:
    """The same picture with different bytes: a JPEG comment segment carrying ``n`` right after SOI.

    Decoders skip comment segments, so the pixels are identical, but the bytes (and so the result-cache key)
    differ for every ``n``: a fresh image at no encoding cost.
    """
    if not jpeg.startswith(SOI):
        raise ValueError("not a JPEG (no SOI marker)")
    text = f"natriton-loadtest {n}".encode()
    return SOI + COM + struct.pack(">H", len(text) + 2) + text + jpeg[2:]


def encode_request(model: str, payload: Payload, *, image: bytes | None = None, tensor: Tensor | None = None) -> bytes:
    """One msgpack ``infer_request`` body."""
    if (image is None) == (tensor is None):
        raise ValueError("give exactly one of image or tensor")
    body = ImageInput(data=image) if image is not None else TensorInput(tensors=(tensor,))  # type: ignore[arg-type]
    request = InferRequest(model=model, input=body, top_k=payload.top_k, use_cache=payload.use_cache)
    return REQUESTS.encode(request)


BodyFactory = Callable[[int], tuple[bytes, str]]
"""Request index → (body, expected tag): ``hit`` for a repeated image, ``fresh`` for a new one, '' otherwise."""


def body_factory(
    model: str, payload: Payload, photos: Mapping[str, bytes], hit_ratio: float | None = None
) -> BodyFactory:
    """Bodies for a scenario: the same body every time, or repeated/fresh images mixed at ``hit_ratio``."""
    if payload.tensor is not None:
        fixed = encode_request(model, payload, tensor=tensor_of(payload.tensor))
        return lambda _i: (fixed, "")
    if payload.image is None:
        raise ValueError("payload has neither image nor tensor")
    if payload.image not in photos:
        raise ValueError(f"unknown image {payload.image!r} (have {sorted(photos)})")
    original = photos[payload.image]
    repeated = encode_request(model, payload, image=original)
    if hit_ratio is None:
        return lambda _i: (repeated, "")
    if not original.startswith(SOI):
        raise ValueError(f"fresh images are made from a JPEG; {payload.image!r} is not one")
    ratio = hit_ratio

    def make(i: int) -> tuple[bytes, str]:
        if is_hit(i, ratio):
            return repeated, "hit"
        return encode_request(model, payload, image=unique_jpeg(original, i)), "fresh"

    return make


def noop_body(model: str, size: int, input_name: str = "DATA") -> bytes:
    """A ``noop`` request carrying ``size`` random bytes as a UINT8 [1, size] tensor (never cached)."""
    spec = TensorPayload(input_name, "UINT8", (1, size))
    return encode_request(model, Payload(use_cache=False), tensor=tensor_of(spec))
