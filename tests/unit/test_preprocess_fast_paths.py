"""The preprocess hot path's shortcuts give exactly what the plain code gave (issue 10: CPU per image)."""

from __future__ import annotations

import asyncio
import io
import threading
from typing import Any, cast

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

import natriton_preprocess.app as app_module
from natriton.catalog import ModelCatalog
from natriton.errors import ErrorCode, MeshError
from natriton.messages import FrameRef
from natriton.profiles import ColorOrder, ImageSpec, ResizeMode
from natriton.tensors import to_tensor
from natriton_preprocess.app import PreprocessApp
from natriton_preprocess.logic import (
    PNG_DECODE_FACTOR,
    DecodeLimits,
    count_sos_markers,
    decode_image,
    decode_work,
    image_to_model_input,
    prepare_frame,
    prepare_image,
    resize_and_crop,
    resize_and_crop_image,
)
from natriton_preprocess.settings import Settings

LIMITS = DecodeLimits(max_pixels=24_000_000, min_side=8)
MOBILENET = ImageSpec(input="IMAGE", datatype="UINT8", height=224, width=224, channels_last=True, resize_shorter=256)


def _jpeg(pixels: np.ndarray, **options: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", **options)
    return out.getvalue()


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff", b"\xda", b"\xff\xda", b"\xda\xff", b"\xff\xff\xda", b"\xff\xda\xff\xda", b"x\xff\xdax\xff"],
)
def test_sos_count_matches_bytes_count_on_edge_cases(data: bytes) -> None:
    assert count_sos_markers(data) == data.count(b"\xff\xda")


def test_sos_count_matches_bytes_count_on_random_and_real_files() -> None:
    rng = np.random.default_rng(10)
    for size in (2, 3, 100, 4096, 80_000):
        noise = rng.choice(np.array([0x00, 0xDA, 0xFF, 0x17], dtype=np.uint8), size=size).tobytes()
        assert count_sos_markers(noise) == noise.count(b"\xff\xda")
    coffee = skdata.coffee()  # type: ignore[no-untyped-call]
    for data in (_jpeg(coffee), _jpeg(coffee, progressive=True)):
        assert count_sos_markers(data) == data.count(b"\xff\xda")
    assert count_sos_markers(_jpeg(coffee, progressive=True)) > 1


def _reference(image: Image.Image, layout: ImageSpec) -> object:
    """The model input as the plain path builds it: a numpy array of the crop, reordered, then to_tensor."""
    pixels = resize_and_crop(image, layout)
    if layout.color is ColorOrder.BGR:
        pixels = pixels[:, :, ::-1]
    array = pixels if layout.channels_last else pixels.transpose(2, 0, 1)
    if layout.datatype == "FP32":
        array = array.astype(np.float32)
    return to_tensor(layout.input, array[np.newaxis])


@pytest.mark.parametrize(
    "layout",
    [
        MOBILENET,
        ImageSpec(input="X", datatype="UINT8", height=300, width=200, channels_last=True, resize=ResizeMode.STRETCH),
        ImageSpec(input="X", datatype="UINT8", height=64, width=64, channels_last=True, color=ColorOrder.BGR),
        ImageSpec(input="X", datatype="FP32", height=64, width=48, channels_last=False, resize_shorter=80),
    ],
)
def test_model_input_is_the_same_tensor_as_the_plain_path(layout: ImageSpec) -> None:
    photo = Image.fromarray(skdata.coffee())  # type: ignore[no-untyped-call]
    tensor = image_to_model_input(photo, layout)
    assert tensor == _reference(photo, layout)
    assert tensor.shape == ((1, layout.height, layout.width, 3) if layout.channels_last else (1, 3, 64, 48))


def test_model_input_of_a_non_rgb_image_takes_the_plain_path() -> None:
    grey = Image.fromarray(skdata.camera())  # type: ignore[no-untyped-call]
    assert grey.mode == "L"
    assert image_to_model_input(grey, MOBILENET) == _reference(grey, MOBILENET)


def test_crop_image_and_crop_array_agree() -> None:
    photo = Image.fromarray(skdata.astronaut())  # type: ignore[no-untyped-call]
    image = resize_and_crop_image(photo, MOBILENET)
    assert image.size == (224, 224) and image.mode == "RGB"
    assert np.array_equal(np.asarray(image), resize_and_crop(photo, MOBILENET))


def test_prepare_image_and_frame_give_the_plain_tensor() -> None:
    coffee = skdata.coffee()  # type: ignore[no-untyped-call]
    data = _jpeg(coffee, quality=92)
    tensor, size = prepare_image(data, MOBILENET, LIMITS)
    assert size == (600, 400)
    assert tensor == _reference(decode_image(data, LIMITS, 256), MOBILENET)
    frame = FrameRef(key="k", width=600, height=400, encoding="rgb24", size=coffee.nbytes)
    tensor, size = prepare_frame(coffee.tobytes(), frame, MOBILENET, LIMITS)
    assert size == (600, 400)
    assert tensor == _reference(Image.fromarray(coffee), MOBILENET)


# ------------------------------------------------------------------------------------------------
# small images decode on the event loop (no thread hand-off), large ones in a decode thread


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_decode_work_reads_the_size_from_the_header() -> None:
    pixels = np.zeros((30, 40, 3), dtype=np.uint8)
    assert decode_work(_jpeg(pixels)) == 40 * 30
    progressive = _jpeg(pixels, progressive=True)
    assert decode_work(progressive) == 40 * 30 * progressive.count(b"\xff\xda") > 40 * 30 * 2
    assert decode_work(_png(pixels)) == 40 * 30 * PNG_DECODE_FACTOR
    exif = Image.Exif()
    exif[0x010F] = "natriton"
    assert decode_work(_jpeg(pixels, exif=exif.tobytes())) == 40 * 30  # segments before the frame header
    padded = _jpeg(pixels)
    assert decode_work(padded[:2] + b"\xff\xff\xff" + padded[2:]) == 40 * 30  # fill bytes before a marker


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GIF89a" + b"\0" * 40,
        b"\xff\xd8",
        b"\xff\xd8\xff\xe0\x00",  # truncated segment
        b"\xff\xd8\xff\xda\x00\x08" + b"\0" * 20,  # a scan before any frame header
        b"\xff\xd8junk" + b"\0" * 20,
        b"\xff\xd8" + b"\xff\xfe\x00\x02" * 100,  # only comments: the peek gives up
        b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR",  # truncated IHDR
        _png(np.zeros((9, 9), dtype=np.uint8))[:33] + b"\0\0\0\0tEXt\0\0\0\0" * 8,  # metadata to inflate
    ],
)
def test_decode_work_is_none_when_the_header_does_not_say(data: bytes) -> None:
    assert decode_work(data) is None


def _app(**settings: Any) -> PreprocessApp:
    return PreprocessApp(cast(Any, None), Settings(**settings), ModelCatalog(), cast(Any, None), cast(Any, None))


def _threads_used(app: PreprocessApp, monkeypatch: pytest.MonkeyPatch, *calls: Any) -> list[bool]:
    """Run each (method, args) of ``app``; whether each decode ran off the event loop's thread."""
    off_loop: list[bool] = []

    def recording(fn: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            off_loop.append(threading.get_ident() != loop_thread)
            return fn(*args)

        return wrapper

    monkeypatch.setattr(app_module, "prepare_image", recording(prepare_image))
    monkeypatch.setattr(app_module, "prepare_frame", recording(prepare_frame))
    loop_thread = threading.get_ident()

    async def run() -> None:
        for method, *args in calls:
            tensor, _size = await method(*args)
            assert tensor.shape == (1, 224, 224, 3)

    try:
        asyncio.run(run())
    finally:
        _stop(app)
    return off_loop


def _stop(app: PreprocessApp) -> None:
    if app.pool is not None:
        app.pool.shutdown(wait=True)


def test_small_images_decode_on_the_loop_large_ones_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    small = _jpeg(skdata.coffee())  # type: ignore[no-untyped-call]
    large = _jpeg(np.zeros((1000, 1200, 3), dtype=np.uint8))  # 1.2 MP
    app = _app()
    frame = FrameRef(key="k", width=600, height=400, encoding="rgb24")
    big_frame = FrameRef(key="k", width=1280, height=960, encoding="rgb24")
    raw, big_raw = bytes(600 * 400 * 3), bytes(1280 * 960 * 3)
    assert _threads_used(
        app,
        monkeypatch,
        (app.image_tensor, small, MOBILENET),
        (app.image_tensor, large, MOBILENET),
        (app.frame_tensor, raw, frame, MOBILENET),
        (app.frame_tensor, big_raw, big_frame, MOBILENET),
        (app.frame_tensor, small, FrameRef(key="k", width=0, height=0, encoding="image"), MOBILENET),
        (app.image_tensor, _png(skdata.chelsea()), MOBILENET),  # type: ignore[no-untyped-call]
    ) == [False, True, False, True, False, False]


def test_inline_decoding_can_be_turned_off_or_made_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    small = _jpeg(skdata.coffee())  # type: ignore[no-untyped-call]
    large = _jpeg(np.zeros((1000, 1200, 3), dtype=np.uint8))
    never = _app(inline_decode_max_pixels=0)
    calls = ((never.image_tensor, small, MOBILENET), (never.image_tensor, large, MOBILENET))
    assert _threads_used(never, monkeypatch, *calls) == [True, True]
    always = _app(decode_threads=0)
    assert always.pool is None
    calls = ((always.image_tensor, small, MOBILENET), (always.image_tensor, large, MOBILENET))
    assert _threads_used(always, monkeypatch, *calls) == [False, False]


def test_an_image_that_fails_inline_fails_as_it_did_in_a_thread() -> None:
    app = _app()
    truncated = _jpeg(skdata.coffee())[:5000]  # type: ignore[no-untyped-call]
    assert app.decodes_inline(truncated)
    with pytest.raises(MeshError) as inline:
        asyncio.run(app.image_tensor(truncated, MOBILENET))
    with pytest.raises(MeshError) as threaded:
        asyncio.run(_app(inline_decode_max_pixels=0).image_tensor(truncated, MOBILENET))
    assert (inline.value.code, inline.value.message) == (threaded.value.code, threaded.value.message)
    assert inline.value.code is ErrorCode.INVALID_ARGUMENT


def test_settings_refuse_negative_decode_settings() -> None:
    with pytest.raises(ValueError, match="inline_decode_max_pixels"):
        Settings(inline_decode_max_pixels=-1)
    with pytest.raises(ValueError, match="decode_threads"):
        Settings(decode_threads=-1)
