"""The image path (``prepare_image``, ``prepare_frame``) under random bytes, generated JPEGs and PNGs of every mode
and option, and mutated real photos: the model's tensor, or a typed ``invalid_argument``/``payload_too_large``,
within the deadline (a decode bomb would blow it)."""

from __future__ import annotations

import functools
import io
from datetime import timedelta

import numpy as np
from hypothesis import event, given, settings
from hypothesis import strategies as st
from PIL import Image

from natriton.errors import ErrorCode, MeshError
from natriton.messages import FrameRef
from natriton.profiles import ImageSpec, ResizeMode
from natriton.tensors import to_array
from natriton_dev.images import sample_photos
from natriton_preprocess.logic import DecodeLimits, prepare_frame, prepare_image
from tests.fuzz.conftest import SLOW_INPUT_CHECKS
from tests.fuzz.strategies import assert_typed, mutated

LIMITS = DecodeLimits(max_pixels=24_000_000, min_side=8)
LAYOUTS = st.sampled_from(
    [
        ImageSpec(input="IMAGE", datatype="UINT8", height=224, width=224, channels_last=True, resize_shorter=256),
        ImageSpec(
            input="IMAGE",
            datatype="FP32",
            height=64,
            width=48,
            channels_last=False,
            resize=ResizeMode.STRETCH,
            resize_shorter=0,
        ),
    ]
)
IMAGE_ERRORS = (ErrorCode.INVALID_ARGUMENT, ErrorCode.PAYLOAD_TOO_LARGE)
IMAGES = settings(deadline=timedelta(seconds=3), suppress_health_check=SLOW_INPUT_CHECKS)


@functools.cache
def photos() -> tuple[bytes, ...]:
    """The real sample photos (JPEG and PNG, a few hundred pixels a side), and a progressive JPEG of one."""
    named = sample_photos()
    progressive = io.BytesIO()
    Image.open(io.BytesIO(named["coffee.jpg"])).save(progressive, "JPEG", progressive=True, quality=80)
    return (*named.values(), progressive.getvalue())


@st.composite
def generated_images(draw: st.DrawFn) -> bytes:
    """A JPEG or PNG of a random mode, size and options: progressive, optimised, ICC profile, EXIF, transparency,
    several frames (APNG, MPO), 16-bit grey."""
    width, height = draw(st.integers(1, 80)), draw(st.integers(1, 80))
    fmt = draw(st.sampled_from(["PNG", "JPEG"]))
    modes = ["L", "RGB", "CMYK"] if fmt == "JPEG" else ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"]
    mode = draw(st.sampled_from(modes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    else:
        image = image.convert(mode)
    options: dict[str, object] = {}
    if draw(st.booleans()):
        options["icc_profile"] = draw(st.binary(max_size=200))
    if draw(st.booleans()):
        options["exif"] = b"Exif\0\0" + draw(st.binary(max_size=200)) if fmt == "JPEG" else draw(st.binary(max_size=64))
    if fmt == "JPEG":
        options.update(progressive=draw(st.booleans()), optimize=draw(st.booleans()), quality=draw(st.integers(1, 95)))
    elif mode == "P" and draw(st.booleans()):
        options["transparency"] = draw(st.integers(0, 255))
    frames = draw(st.integers(1, 3))
    if frames > 1 and mode != "I;16":
        options.update(save_all=True, append_images=[image.copy() for _ in range(frames - 1)])
        fmt = "MPO" if fmt == "JPEG" else fmt
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def check_prepare_image(data: bytes, layout: ImageSpec, limits: DecodeLimits = LIMITS) -> None:
    """The model's tensor and the image's size, or a typed error."""
    try:
        tensor, (width, height) = prepare_image(data, layout, limits)
    except MeshError as exc:
        assert_typed(exc, *IMAGE_ERRORS)
        event(exc.code.value)
        return
    event("decoded")
    assert min(width, height) >= limits.min_side and width * height <= limits.max_pixels
    expected = (1, layout.height, layout.width, 3) if layout.channels_last else (1, 3, layout.height, layout.width)
    assert to_array(tensor).shape == expected


@IMAGES
@given(data=st.binary(max_size=4096), layout=LAYOUTS)
def test_random_bytes(data: bytes, layout: ImageSpec) -> None:
    check_prepare_image(data, layout)


@IMAGES
@given(
    data=st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"]).flatmap(
        lambda m: st.binary(max_size=2048).map(m.__add__)
    )
)
def test_random_bytes_after_a_jpeg_or_png_signature(data: bytes) -> None:
    check_prepare_image(data, ImageSpec(input="I", datatype="UINT8", height=32, width=32, channels_last=True))


@IMAGES
@given(data=generated_images(), layout=LAYOUTS)
def test_generated_images_decode(data: bytes, layout: ImageSpec) -> None:
    """Every JPEG and PNG Pillow writes, in any mode and with any option, decodes (or is typed: too small)."""
    try:
        prepare_image(data, layout, LIMITS)
    except MeshError as exc:
        assert_typed(exc, ErrorCode.INVALID_ARGUMENT)
        assert "at least 8 px" in exc.message, exc.message


@IMAGES
@given(data=mutated(generated_images()), layout=LAYOUTS)
def test_mutated_generated_images(data: bytes, layout: ImageSpec) -> None:
    check_prepare_image(data, layout)


@IMAGES
@given(data=st.data(), layout=LAYOUTS)
def test_mutated_real_photos(data: st.DataObject, layout: ImageSpec) -> None:
    check_prepare_image(data.draw(mutated(st.sampled_from(photos()), most=4)), layout)


@IMAGES
@given(data=st.data())
def test_limits_of_any_size(data: st.DataObject) -> None:
    """Small limits (pixels, scans, header pieces) on real photos: refused with a typed error, or decoded."""

    def small_or_default(small: st.SearchStrategy[int], default: int) -> int:
        return data.draw(small | st.just(default))

    limits = DecodeLimits(
        max_pixels=small_or_default(st.integers(1, 400_000), LIMITS.max_pixels),
        min_side=small_or_default(st.integers(0, 600), LIMITS.min_side),
        scan_passes=small_or_default(st.integers(0, 40), LIMITS.scan_passes),
        max_scans=small_or_default(st.integers(0, 12), LIMITS.max_scans),
        max_jpeg_header_steps=small_or_default(st.integers(0, 12), LIMITS.max_jpeg_header_steps),
        max_png_chunks=small_or_default(st.integers(0, 8), LIMITS.max_png_chunks),
        max_png_metadata_chunks=small_or_default(st.integers(0, 4), LIMITS.max_png_metadata_chunks),
    )
    check_prepare_image(data.draw(st.sampled_from(photos())), data.draw(LAYOUTS), limits)


@IMAGES
@given(
    frame=st.builds(
        FrameRef,
        key=st.just("k"),
        width=st.integers(-5, 300),
        height=st.integers(-5, 300),
        encoding=st.sampled_from(["rgb24", "jpeg", "image"]),
    ),
    data=st.binary(max_size=2048) | st.sampled_from(photos()),
    layout=LAYOUTS,
    exact=st.booleans(),
)
def test_stored_frames(frame: FrameRef, data: bytes, layout: ImageSpec, exact: bool) -> None:
    """A stored frame: raw RGB whose size may not match its bytes, or an encoded image."""
    if exact and frame.encoding == "rgb24" and 0 < frame.width * frame.height <= 40_000:
        data = bytes(frame.width * frame.height * 3)
    try:
        tensor, _ = prepare_frame(data, frame, layout, LIMITS)
    except MeshError as exc:
        assert_typed(exc, *IMAGE_ERRORS)
        return
    assert to_array(tensor).shape[0] == 1
