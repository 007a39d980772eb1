"""Image decoding, pixel modes, limits and shaping into the model's input tensor (as its profile's ImageSpec says)."""

from __future__ import annotations

import io
import struct
import time
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile
from skimage import data as skdata
from skimage.transform import resize as sk_resize

from natriton.errors import ErrorCode, MeshError
from natriton.messages import ModelInfo, Tensor, TensorSpec
from natriton.profiles import ColorOrder, EmbedderProfile, ImageSpec, RawProfile, ResizeMode, build_profile
from natriton.tensors import check_against_specs, to_array, to_tensor
from natriton_preprocess.logic import (
    DecodeLimits,
    check_tensors,
    decode_image,
    image_spec_of,
    image_to_tensor,
    prepare_image,
    resize_and_crop,
    scan_limit,
    to_rgb,
)

LIMITS = DecodeLimits(max_pixels=24_000_000, min_side=8)


def _model(
    shape: tuple[int, ...] = (224, 224, 3),
    datatype: str = "UINT8",
    parameters: dict[str, str] | None = None,
    inputs: int = 1,
    max_batch_size: int = 32,
    kind: str = "classifier",
) -> ModelInfo:
    """A model as the router describes it: declared tensors plus the profile built from its parameters."""
    specs = [TensorSpec(name="IMAGE", datatype=datatype, shape=shape)]
    specs += [TensorSpec(name=f"EXTRA{i}", datatype="FP32", shape=(1,)) for i in range(1, inputs)]
    outputs = (
        (
            TensorSpec(name="BOXES", datatype="FP32", shape=(-1, 4)),
            TensorSpec(name="SCORES", datatype="FP32", shape=(-1,)),
        )
        if kind == "detector"
        else (TensorSpec(name="LOGITS", datatype="FP32", shape=(1000,)),)
    )
    params = {"natriton.kind": kind, **(parameters or {})}
    built = build_profile("mobilenet_v2", params, tuple(specs), outputs)
    return ModelInfo(
        name="mobilenet_v2",
        versions=("1",),
        task=kind,
        max_batch_size=max_batch_size,
        inputs=tuple(specs),
        outputs=outputs,
        parameters=params,
        profile=built.profile,
    )


MOBILENET = _model(parameters={"natriton.resize_shorter": "256", "natriton.color": "RGB"})


def _encode(image: Image.Image | np.ndarray, fmt: str, **kwargs: object) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def coffee() -> np.ndarray:
    return skdata.coffee()  # 400x600 RGB photo


@pytest.fixture(scope="module")
def coffee_jpeg(coffee: np.ndarray) -> bytes:
    return _encode(coffee, "JPEG", quality=92)


@pytest.fixture(scope="module")
def coffee_png(coffee: np.ndarray) -> bytes:
    return _encode(coffee, "PNG", compress_level=1)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares its size but holds no pixel data (decoding it would fail as truncated)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _error(call: object, *args: object) -> MeshError:
    with pytest.raises(MeshError) as info:
        call(*args)  # type: ignore[operator]
    return info.value


# ------------------------------------------------------------------------------------------------
# image_spec_of
# ------------------------------------------------------------------------------------------------
def test_spec_from_hwc_uint8_model() -> None:
    assert image_spec_of(MOBILENET) == ImageSpec(
        input="IMAGE",
        datatype="UINT8",
        height=224,
        width=224,
        channels_last=True,
        color=ColorOrder.RGB,
        resize=ResizeMode.SHORTER_SIDE_CROP,
        resize_shorter=256,
    )


def test_spec_defaults_without_parameters() -> None:
    spec = image_spec_of(_model(parameters={}))
    assert spec.resize_shorter == 224
    assert spec.color is ColorOrder.RGB
    assert spec.resize is ResizeMode.SHORTER_SIDE_CROP


def test_spec_from_chw_fp32_bgr_model() -> None:
    spec = image_spec_of(_model(shape=(3, 240, 320), datatype="FP32", parameters={"natriton.color": "BGR"}))
    assert (spec.channels_last, spec.height, spec.width, spec.datatype) == (False, 240, 320, "FP32")
    assert spec.color is ColorOrder.BGR
    assert spec.resize_shorter == 320  # never smaller than the crop


@pytest.mark.parametrize(
    "model",
    [
        _model(inputs=2),
        _model(shape=(1000,)),
        _model(shape=(224, 224, 4)),
        _model(shape=(-1, -1, 3)),
        _model(datatype="INT32"),
        _model(shape=(1000,), kind="detector"),
    ],
    ids=["two-inputs", "vector", "four-channels", "variable-size", "int32", "detector-vector"],
)
def test_spec_refuses_models_that_do_not_take_an_image(model: ModelInfo) -> None:
    err = _error(image_spec_of, model)
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert "'mobilenet_v2'" in err.message and "does not take images" in err.message


@pytest.mark.parametrize("profile", [RawProfile(), EmbedderProfile(output="LOGITS")], ids=["raw", "embedder"])
def test_raw_and_embedder_models_do_not_take_images(profile: RawProfile | EmbedderProfile) -> None:
    info = ModelInfo(
        name="m",
        versions=("1",),
        task=str(profile.__struct_config__.tag),
        max_batch_size=8,
        inputs=MOBILENET.inputs,  # even with an image-shaped input: the profile decides
        outputs=MOBILENET.outputs,
        profile=profile,
    )
    err = _error(image_spec_of, info)
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert "'m'" in err.message


# ------------------------------------------------------------------------------------------------
# image_to_tensor on real photos
# ------------------------------------------------------------------------------------------------
def _reference_crop(photo: np.ndarray, layout: ImageSpec) -> np.ndarray:
    """Independent reference: the center region that maps onto the crop, resized with scikit-image."""
    h, w = photo.shape[:2]
    scale = layout.resize_shorter / min(h, w)
    crop_h, crop_w = layout.height / scale, layout.width / scale
    top, left = (h - crop_h) / 2, (w - crop_w) / 2
    region = photo[round(top) : round(top + crop_h), round(left) : round(left + crop_w)]
    return (sk_resize(region, (layout.height, layout.width), anti_aliasing=True) * 255).astype(np.float64)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_photo_becomes_model_tensor(fmt: str, coffee: np.ndarray, request: pytest.FixtureRequest) -> None:
    encoded = request.getfixturevalue(f"coffee_{fmt}")
    layout = image_spec_of(MOBILENET)
    tensor = image_to_tensor(encoded, layout, LIMITS)
    assert tensor.name == "IMAGE"
    assert tensor.datatype == "UINT8"
    assert tensor.shape == (1, 224, 224, 3)
    check_against_specs([tensor], MOBILENET.inputs, MOBILENET.name)
    pixels = to_array(tensor)[0].astype(np.float64)
    diff = np.abs(pixels - _reference_crop(coffee, layout)).mean()
    assert diff < 6.0, f"mean abs difference to the reference crop is {diff:.1f}"


def test_big_jpeg_reduced_decode_matches_full_decode(coffee: np.ndarray) -> None:
    big = Image.fromarray(coffee).resize((2400, 1600), Image.Resampling.BILINEAR)
    layout = image_spec_of(MOBILENET)
    fast = to_array(image_to_tensor(_encode(big, "JPEG", quality=95), layout, LIMITS)).astype(np.float64)
    exact = to_array(image_to_tensor(_encode(big, "PNG", compress_level=1), layout, LIMITS)).astype(np.float64)
    assert np.abs(fast - exact).mean() < 4.0


def test_decode_uses_jpeg_draft_scale_but_keeps_the_shorter_side(coffee: np.ndarray) -> None:
    big = _encode(Image.fromarray(coffee).resize((2400, 1600)), "JPEG")
    image = decode_image(big, LIMITS, shorter_side_hint=256)
    assert min(image.size) >= 256
    assert image.size[0] < 2400  # decoded at a reduced DCT scale
    assert image.mode == "RGB"


def test_chw_fp32_bgr_layout(coffee_png: bytes) -> None:
    rgb = to_array(image_to_tensor(coffee_png, image_spec_of(MOBILENET), LIMITS))[0]
    model = _model(
        shape=(3, 224, 224), datatype="FP32", parameters={"natriton.resize_shorter": "256", "natriton.color": "BGR"}
    )
    tensor = image_to_tensor(coffee_png, image_spec_of(model), LIMITS)
    assert (tensor.datatype, tensor.shape) == ("FP32", (1, 3, 224, 224))
    chw = to_array(tensor)[0]
    np.testing.assert_array_equal(chw[0], rgb[:, :, 2].astype(np.float32))  # B first
    np.testing.assert_array_equal(chw[2], rgb[:, :, 0].astype(np.float32))


def test_unsupported_image_datatype_is_refused(coffee_png: bytes) -> None:
    # a profile never declares one (an INT32 input takes tensors only), but prepare_image checks anyway
    spec = ImageSpec(input="IMAGE", datatype="INT32", height=224, width=224, channels_last=True, resize_shorter=256)
    err = _error(image_to_tensor, coffee_png, spec, LIMITS)
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert "INT32" in err.message


# ------------------------------------------------------------------------------------------------
# pixel modes: everything a JPEG or PNG decodes to becomes 8-bit RGB
# ------------------------------------------------------------------------------------------------
def _gray16(gray8: np.ndarray) -> Image.Image:
    """A 16-bit grayscale image with the same brightness as ``gray8`` (0-255 scaled to 0-65535)."""
    image = Image.fromarray(gray8.astype(np.uint16) * 257)
    assert image.mode == "I;16"
    return image


def _png16(pixels: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG written by hand (Pillow writes no 16-bit grey+alpha or RGB); color type 0, 2, 4 or 6."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    height, width = pixels.shape[:2]
    rows = pixels.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 per row
    ihdr = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def coffee_gray(coffee: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(coffee).convert("L"))


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("L", "JPEG"),
        ("L", "PNG"),
        ("RGBA", "PNG"),
        ("P", "PNG"),
        ("LA", "PNG"),
        ("1", "PNG"),
        ("CMYK", "JPEG"),
        ("I;16", "PNG"),
    ],
)
def test_other_color_modes_become_rgb(mode: str, fmt: str, coffee: np.ndarray, coffee_gray: np.ndarray) -> None:
    image = _gray16(coffee_gray) if mode == "I;16" else Image.fromarray(coffee).convert(mode)
    data = _encode(image, fmt)
    assert Image.open(io.BytesIO(data)).mode == mode  # the file really decodes to that mode
    decoded = decode_image(data, LIMITS)
    assert decoded.mode == "RGB"
    assert decoded.size == (600, 400)
    tensor = image_to_tensor(data, image_spec_of(MOBILENET), LIMITS)
    assert tensor.shape == (1, 224, 224, 3)
    # the picture survives the conversion (not all black, all white or noise); 10x10 blocks average out dithering
    reference = np.asarray(Image.fromarray(coffee).convert("L").resize((60, 40), Image.Resampling.BOX), np.float64)
    grey = np.asarray(decoded.convert("L").resize((60, 40), Image.Resampling.BOX), dtype=np.float64)
    assert np.abs(grey - reference).mean() < 12.0


def test_sixteen_bit_gray_png_matches_the_eight_bit_one(coffee_gray: np.ndarray) -> None:
    eight = _encode(Image.fromarray(coffee_gray, mode="L"), "PNG")
    sixteen = _encode(_gray16(coffee_gray), "PNG")
    assert Image.open(io.BytesIO(sixteen)).mode == "I;16"
    spec = image_spec_of(MOBILENET)
    a = to_array(image_to_tensor(eight, spec, LIMITS)).astype(np.int64)
    b = to_array(image_to_tensor(sixteen, spec, LIMITS)).astype(np.int64)
    assert a.shape == b.shape == (1, 224, 224, 3)
    assert np.abs(a - b).max() <= 1  # Pillow's own convert("RGB") would clip almost every pixel to white
    assert (b[..., 0] == b[..., 1]).all() and (b[..., 1] == b[..., 2]).all()  # still grey


def test_sixteen_bit_gray_is_scaled_not_clipped() -> None:
    levels = np.array([[0, 257, 32768, 65535]], dtype=np.uint16).repeat(8, axis=0).repeat(2, axis=1)
    rgb = np.asarray(to_rgb(Image.fromarray(levels)))
    assert rgb.shape == (8, 8, 3)
    assert rgb[0, ::2, 0].tolist() == [0, 1, 128, 255]


@pytest.mark.parametrize(
    ("color_type", "mode"), [(0, "I;16"), (2, "RGB"), (4, "LA"), (6, "RGBA")], ids=["grey", "rgb", "grey-alpha", "rgba"]
)
def test_sixteen_bit_pngs_of_every_color_type(
    color_type: int, mode: str, coffee: np.ndarray, coffee_gray: np.ndarray
) -> None:
    grey16, rgb16 = coffee_gray.astype(np.uint16) * 257, coffee.astype(np.uint16) * 257
    opaque = np.full((*coffee.shape[:2], 1), 65535, dtype=np.uint16)
    pixels = {
        0: grey16,
        2: rgb16,
        4: np.concatenate([grey16[..., None], opaque], axis=-1),
        6: np.concatenate([rgb16, opaque], axis=-1),
    }[color_type]
    decoded = np.asarray(decode_image(_png16(pixels, color_type), LIMITS), dtype=np.int64)
    expected = np.stack([coffee_gray] * 3, axis=-1) if color_type in (0, 4) else coffee
    assert decoded.shape == (400, 600, 3)
    assert np.abs(decoded - expected).max() <= 1


def test_rgb_is_returned_as_is() -> None:
    image = Image.new("RGB", (8, 8), (1, 2, 3))
    assert to_rgb(image) is image


def test_sixteen_bit_conversion_keeps_the_original_size_note(coffee_gray: np.ndarray) -> None:
    data = _encode(_gray16(coffee_gray), "PNG")
    spec = image_spec_of(_model(shape=(300, 300, 3), kind="detector"))
    tensor, size = prepare_image(data, spec, LIMITS)
    assert tensor.shape == (1, 300, 300, 3)
    assert size == (600, 400)


@pytest.mark.parametrize("mode", ["F", "HSV", "LAB", "RGBa", "La"])
def test_unsupported_pixel_mode_is_invalid_argument(mode: str, coffee: np.ndarray) -> None:
    image = Image.fromarray(coffee).convert("L").convert("F") if mode == "F" else Image.fromarray(coffee).convert(mode)
    assert image.mode == mode
    err = _error(to_rgb, image)
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert mode in err.message and "not supported" in err.message


# ------------------------------------------------------------------------------------------------
# decode errors and limits
# ------------------------------------------------------------------------------------------------
def test_garbage_is_invalid_argument() -> None:
    err = _error(decode_image, b"definitely not an image" * 10, LIMITS)
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert "not a decodable image" in err.message


def test_empty_input_is_invalid_argument() -> None:
    assert _error(decode_image, b"", LIMITS).code is ErrorCode.INVALID_ARGUMENT


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_truncated_image_is_invalid_argument(fmt: str, request: pytest.FixtureRequest) -> None:
    encoded = request.getfixturevalue(f"coffee_{fmt}")
    err = _error(image_to_tensor, encoded[: len(encoded) // 2], image_spec_of(MOBILENET), LIMITS)
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert "truncated" in err.message


@pytest.mark.parametrize("size", [(1, 1), (7, 500), (500, 7)])
def test_tiny_image_is_invalid_argument(size: tuple[int, int]) -> None:
    err = _error(decode_image, _encode(Image.new("RGB", size, "red"), "PNG"), LIMITS)
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert "at least 8 px" in err.message


def test_image_at_min_side_is_accepted() -> None:
    assert decode_image(_encode(Image.new("RGB", (8, 8), "red"), "PNG"), LIMITS).size == (8, 8)


def test_image_over_max_pixels_is_payload_too_large() -> None:
    big = _encode(Image.new("1", (6000, 4500)), "PNG", compress_level=1)  # 27 MP, a few KB
    assert len(big) < 100_000
    err = _error(decode_image, big, LIMITS)
    assert err.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert "6000x4500" in err.message


def test_pixel_limit_is_checked_before_decoding() -> None:
    # only a header: decoding it would fail as truncated, so PAYLOAD_TOO_LARGE proves no decode happened
    err = _error(decode_image, _png_header_only(5000, 5000), LIMITS)
    assert err.code is ErrorCode.PAYLOAD_TOO_LARGE
    # the same header under the limit does reach the decoder
    assert _error(decode_image, _png_header_only(100, 100), LIMITS).code is ErrorCode.INVALID_ARGUMENT


def test_decompression_bomb_is_payload_too_large() -> None:
    err = _error(decode_image, _png_header_only(20_000, 10_000), LIMITS)
    assert err.code is ErrorCode.PAYLOAD_TOO_LARGE


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "WEBP"])
def test_other_formats_are_refused(fmt: str, coffee: np.ndarray) -> None:
    err = _error(decode_image, _encode(coffee, fmt), LIMITS)
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert fmt in err.message and "not accepted" in err.message


# ------------------------------------------------------------------------------------------------
# resize + center crop
# ------------------------------------------------------------------------------------------------
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _bands(width: int, height: int, vertical: bool) -> bytes:
    """Three equal bands: red, green, blue from top to bottom (or left to right)."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    n = height if vertical else width
    for i, color in enumerate((RED, GREEN, BLUE)):
        part = slice(i * n // 3, (i + 1) * n // 3)
        if vertical:
            pixels[part, :] = color
        else:
            pixels[:, part] = color
    return _encode(pixels, "PNG")


def _assert_green(crop: np.ndarray, margin: int) -> None:
    inner = crop[margin:-margin, margin:-margin].astype(int)
    assert (inner[..., 1] > 240).all() and (inner[..., 0] < 15).all() and (inner[..., 2] < 15).all()
    # the border rows may blend a little, but never towards red or blue
    assert (crop[..., 1].astype(int) >= crop[..., 0]).all()
    assert (crop[..., 1].astype(int) >= crop[..., 2]).all()


@pytest.mark.parametrize("resize_shorter", ["224", "256"])
def test_portrait_is_center_cropped(resize_shorter: str) -> None:
    layout = image_spec_of(_model(parameters={"natriton.resize_shorter": resize_shorter}))
    crop = to_array(image_to_tensor(_bands(100, 300, vertical=True), layout, LIMITS))[0]
    assert crop.shape == (224, 224, 3)
    _assert_green(crop, margin=4)


def test_landscape_is_center_cropped() -> None:
    layout = image_spec_of(_model(parameters={}))
    crop = to_array(image_to_tensor(_bands(300, 100, vertical=False), layout, LIMITS))[0]
    _assert_green(crop, margin=4)


def test_portrait_crop_keeps_the_middle_not_the_top() -> None:
    # a tall image whose top third is red: a top-anchored crop would be red, a squashed one striped
    layout = image_spec_of(_model(parameters={}))
    crop = to_array(image_to_tensor(_bands(224, 672, vertical=True), layout, LIMITS))[0]
    assert (crop[..., 1] == 255).all()


# ------------------------------------------------------------------------------------------------
# ready-made tensors
# ------------------------------------------------------------------------------------------------
def test_check_tensors_accepts_and_returns_valid_tensors() -> None:
    tensors = (to_tensor("IMAGE", np.zeros((2, 224, 224, 3), dtype=np.uint8)),)
    assert check_tensors(tensors, MOBILENET) is tensors


def test_check_tensors_refuses_batch_over_max_batch_size() -> None:
    tensors = (to_tensor("IMAGE", np.zeros((3, 224, 224, 3), dtype=np.uint8)),)
    err = _error(check_tensors, tensors, _model(max_batch_size=2))
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert "at most 2" in err.message


def test_check_tensors_refuses_wrong_shape() -> None:
    tensors = (to_tensor("IMAGE", np.zeros((1, 3, 224, 224), dtype=np.uint8)),)
    assert _error(check_tensors, tensors, MOBILENET).code is ErrorCode.INVALID_ARGUMENT


# ------------------------------------------------------------------------------------------------
# stretch resize (detectors) and the original image size
# ------------------------------------------------------------------------------------------------
SSD = _model(shape=(300, 300, 3), kind="detector")  # a detector stretches by default


def test_stretch_spec_from_model() -> None:
    spec = image_spec_of(SSD)
    assert spec.resize is ResizeMode.STRETCH
    assert (spec.height, spec.width, spec.resize_shorter) == (300, 300, 0)
    stretched = _model(parameters={"natriton.resize": "stretch"})
    assert image_spec_of(stretched).resize is ResizeMode.STRETCH
    assert image_spec_of(_model(parameters={"natriton.resize": "shorter_side_crop"})).resize is not ResizeMode.STRETCH
    assert image_spec_of(MOBILENET).resize is ResizeMode.SHORTER_SIDE_CROP
    cropping_detector = _model(
        shape=(300, 300, 3), kind="detector", parameters={"natriton.resize": "shorter_side_crop"}
    )
    assert image_spec_of(cropping_detector).resize is ResizeMode.SHORTER_SIDE_CROP


def test_resize_and_crop_directly() -> None:
    image = Image.fromarray(np.zeros((100, 300, 3), dtype=np.uint8))
    crop = image_spec_of(_model(shape=(50, 50, 3), parameters={}))
    assert resize_and_crop(image, crop).shape == (50, 50, 3)
    stretch = image_spec_of(_model(shape=(40, 60, 3), kind="detector"))
    assert resize_and_crop(image, stretch).shape == (40, 60, 3)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_stretch_keeps_the_whole_image_and_reports_the_original_size(fmt: str, coffee: np.ndarray) -> None:
    photo = np.asarray(Image.fromarray(coffee).resize((512, 400), Image.Resampling.BILINEAR))
    tensor, size = prepare_image(_encode(photo, fmt), image_spec_of(SSD), LIMITS)
    assert tensor.shape == (1, 300, 300, 3)
    assert tensor.datatype == "UINT8"
    assert size == (512, 400)
    reference = np.asarray(Image.fromarray(photo).resize((300, 300), Image.Resampling.BILINEAR), dtype=np.float64)
    assert np.abs(to_array(tensor)[0].astype(np.float64) - reference).mean() < 6.0


def test_stretch_does_not_crop_the_sides() -> None:
    # three vertical bands on a landscape image: a centre crop would cut into red and blue, a stretch keeps all
    tensor, size = prepare_image(_bands(600, 300, vertical=False), image_spec_of(SSD), LIMITS)
    pixels = to_array(tensor)[0]
    assert size == (600, 300)
    assert (pixels[:, :95] == RED).all()
    assert (pixels[:, 105:195] == GREEN).all()
    assert (pixels[:, 205:] == BLUE).all()
    cropped = to_array(image_to_tensor(_bands(600, 300, vertical=False), image_spec_of(_model()), LIMITS))[0]
    assert (cropped[:, :, 1] == 255).mean() > 0.6  # the classifier crop is mostly the green middle


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_draft_decoded_jpeg_reports_the_file_size(mode: str, coffee: np.ndarray) -> None:
    big = Image.fromarray(coffee).resize((2400, 1800), Image.Resampling.BILINEAR).convert(mode)
    data = _encode(big, "JPEG", quality=90)
    layout = image_spec_of(SSD)
    hint = max(layout.height, layout.width)  # what prepare_image asks for when stretching
    assert decode_image(data, LIMITS, hint).size[0] < 2400  # DCT draft scaling did happen
    tensor, size = prepare_image(data, layout, LIMITS)
    assert tensor.shape == (1, 300, 300, 3)
    assert size == (2400, 1800)  # the file's size, not the draft's


def test_crop_layout_also_reports_the_original_size(coffee_jpeg: bytes) -> None:
    tensor, size = prepare_image(coffee_jpeg, image_spec_of(MOBILENET), LIMITS)
    assert tensor.shape == (1, 224, 224, 3)
    assert size == (600, 400)


def test_resize_work_is_the_output_size_whatever_the_input_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 100000x10 PNG (3 KB) once became a 2,560,000x256 image before the crop (seconds, gigabytes): only the
    crop's region is resampled now, straight to the model's size, and the result equals resize-then-crop."""
    layout = ImageSpec(input="IN", datatype="UINT8", height=224, width=224, channels_last=True, resize_shorter=256)
    requested: list[tuple[int, int]] = []
    original_resize = Image.Image.resize

    def recording_resize(self: Image.Image, size: tuple[int, int], *args: Any, **kwargs: Any) -> Image.Image:
        requested.append(size)
        return original_resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", recording_resize)
    narrow = resize_and_crop(Image.new("RGB", (100_000, 10), (120, 50, 30)), layout)
    assert narrow.shape == (224, 224, 3) and (narrow == (120, 50, 30)).all()
    assert requested == [(224, 224)]

    photo = Image.fromarray(skdata.coffee())  # type: ignore[no-untyped-call]
    width, height = photo.size
    scale = 256 / min(width, height)
    full = (round(width * scale), round(height * scale))
    left, top = (full[0] - 224) // 2, (full[1] - 224) // 2
    expected = np.asarray(
        original_resize(photo, full, Image.Resampling.BILINEAR).crop((left, top, left + 224, top + 224))
    )
    assert np.array_equal(resize_and_crop(photo, layout), expected)


# ------------------------------------------------------------------------------------------------
# what decoding costs: hostile files are refused before the work, every failure is typed
# ------------------------------------------------------------------------------------------------
def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _with_chunks(png: bytes, chunks: bytes, *, after_pixels: bool = False) -> bytes:
    """``png`` with ``chunks`` added after IHDR, or just before IEND."""
    at = len(png) - 12 if after_pixels else 8 + 25
    return png[:at] + chunks + png[at:]


def _no_pixels_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any pixel decoding (``ImageFile.load``) fail the test: a refusal must come before it."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def _progressive(size: tuple[int, int], extra_scans: int = 0) -> bytes:
    """A progressive JPEG of one grey; ``extra_scans`` repeats its last scan (each repeat costs a pass over every
    pixel: 1,000 of them on 23 MP took 14 s to decode, in a 130 KB file)."""
    data = _encode(Image.new("L", size, 128), "JPEG", progressive=True)
    last_scan = data[data.rindex(b"\xff\xda") : -2]
    return data[:-2] + last_scan * extra_scans + b"\xff\xd9"


def test_scan_limit_scales_with_the_pixels() -> None:
    assert scan_limit(24_000_000, LIMITS) == 32
    assert scan_limit(12_000_000, LIMITS) == 64
    assert scan_limit(1_000_000, LIMITS) == 256  # the cap: every scan also has a fixed cost
    assert scan_limit(64, LIMITS) == 256


def test_progressive_jpeg_with_too_many_scans_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = _progressive((4800, 4800), extra_scans=1000)
    assert len(bomb) < 200_000
    _no_pixels_decoded(monkeypatch)
    err = _error(decode_image, bomb, LIMITS)
    assert err.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert "1006 scans" in err.message and "limit is 33" in err.message


def test_small_progressive_jpeg_with_many_scans_is_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_pixels_decoded(monkeypatch)
    err = _error(decode_image, _progressive((64, 64), extra_scans=300), LIMITS)
    assert err.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert "limit is 256" in err.message


@pytest.mark.parametrize("size", [(6000, 4000), (64, 64)])
def test_ordinary_progressive_jpegs_decode(size: tuple[int, int], coffee: np.ndarray) -> None:
    assert decode_image(_progressive(size), LIMITS, 256).mode == "RGB"  # Pillow writes 6 scans (10 in colour)
    photo = _encode(coffee, "JPEG", progressive=True, optimize=True)
    assert decode_image(photo, LIMITS).size == (600, 400)


@pytest.mark.parametrize(
    "padding",
    [
        b"\xff" * 5000,  # fill bytes before a marker (Pillow reads them one at a time)
        b"\xff\xfe\x00\x02" * 2000,  # empty comments
        b"\xff\xe1\x00\x02" * 2000,  # empty APP1 segments
        b"\xff\xfe\x00\x02" + b"\x00" * 5000,  # junk between segments
    ],
    ids=["fill-bytes", "comments", "app1", "junk"],
)
def test_jpeg_headers_of_thousands_of_pieces_are_refused_unparsed(
    padding: bytes, coffee_jpeg: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 MB of them took Pillow's marker loop (Python) 1 to 1.5 s."""
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: pytest.fail("Pillow parsed the header"))
    err = _error(decode_image, coffee_jpeg[:2] + padding + coffee_jpeg[2:], LIMITS)
    assert err.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert "1024 marker segments" in err.message


def test_jpeg_with_a_few_hundred_segments_decodes(coffee_jpeg: bytes) -> None:
    data = coffee_jpeg[:2] + b"\xff\xfe\x00\x05abc" * 300 + b"\xff" * 100 + coffee_jpeg[2:]
    assert decode_image(data, LIMITS).size == (600, 400)


def test_png_with_too_many_metadata_chunks_is_refused_unparsed(
    coffee_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _chunk(b"tEXt", b"k\x00v")
    assert decode_image(_with_chunks(coffee_png, text * 60), LIMITS).size == (600, 400)
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: pytest.fail("Pillow parsed the chunks"))
    for after_pixels in (False, True):
        err = _error(decode_image, _with_chunks(coffee_png, text * 70, after_pixels=after_pixels), LIMITS)
        assert err.code is ErrorCode.PAYLOAD_TOO_LARGE
        assert "64 chunks that are not pixel data" in err.message


def _split_pixel_data(png: bytes, pieces: int) -> bytes:
    """``png`` (one IDAT chunk) with its pixel data split over ``pieces`` IDAT chunks."""
    start = png.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", png[start : start + 4])
    data = png[start + 8 : start + 8 + length]
    step = -(-len(data) // pieces)
    split = b"".join(_chunk(b"IDAT", data[i : i + step]) for i in range(0, len(data), step))
    return png[:start] + split + png[start + 12 + length :]


def test_png_of_too_many_chunks_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    png = _encode(Image.new("RGB", (120, 100), "red"), "PNG", compress_level=0)  # 36 KB of pixel data
    assert png.count(b"IDAT") == 1
    assert to_array(image_to_tensor(_split_pixel_data(png, 1000), image_spec_of(MOBILENET), LIMITS))[0, 0, 0, 0] == 255
    monkeypatch.setattr(Image, "open", lambda *args, **kwargs: pytest.fail("Pillow parsed the chunks"))
    split = _split_pixel_data(png, 40_000)  # a byte each
    assert split.count(b"IDAT") > 16_384
    err = _error(decode_image, split, LIMITS)
    assert err.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert "16384 chunks" in err.message


@pytest.mark.parametrize("kind", [b"zTXt", b"iCCP"])
@pytest.mark.parametrize("after_pixels", [False, True], ids=["before-pixels", "after-pixels"])
def test_compressed_chunk_bombs_are_invalid_argument(kind: bytes, after_pixels: bool, coffee_png: bytes) -> None:
    """50 MB of zeros in 49 KB: Pillow refuses to inflate it with a ValueError, which once escaped as ``internal``."""
    bomb = _chunk(kind, b"k\x00\x00" + zlib.compress(bytes(50_000_000), 9))
    err = _error(decode_image, _with_chunks(coffee_png, bomb, after_pixels=after_pixels), LIMITS)
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert "too large" in err.message.lower() and err.message.isprintable()


def test_animated_png_decodes_its_first_frame_only() -> None:
    frames = [Image.new("RGB", (64, 48), color) for color in ("red", "blue", "green")] * 50
    data = _encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    assert data.count(b"fdAT") > 64  # more chunks than a still PNG may have, all of them after the first frame
    decoded = decode_image(data, LIMITS)
    assert decoded.getpixel((0, 0)) == (255, 0, 0)


def test_mpo_decodes_its_first_picture() -> None:
    """A JPEG with more pictures after it (phones, 3D cameras): Pillow calls it MPO."""
    first, second = Image.new("RGB", (64, 48), "red"), Image.new("RGB", (64, 48), "blue")
    data = _encode(first, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    decoded = decode_image(data, LIMITS)
    assert decoded.size == (64, 48)
    assert decoded.getpixel((10, 10))[0] > 200


def test_palette_with_transparency_becomes_its_colours() -> None:
    image = Image.new("P", (16, 16), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0, 0, 0] * 254)
    decoded = decode_image(_encode(image, "PNG", transparency=1), LIMITS)
    assert decoded.mode == "RGB" and decoded.getpixel((3, 3)) == (10, 200, 30)


def test_32_bit_grey_is_clipped_to_sixteen_bits() -> None:
    wide = Image.fromarray(np.array([[-5, 0, 65535, 70000]] * 8, dtype=np.int32).repeat(2, axis=1))
    assert wide.mode == "I"
    assert np.asarray(to_rgb(wide))[0, ::2, 0].tolist() == [0, 0, 255, 255]


@pytest.mark.parametrize("fmt", ["ICO", "PCX", "TGA", "PPM"])
def test_other_pillow_formats_are_never_parsed(fmt: str) -> None:
    """Only the JPEG and PNG plugins read a producer's bytes."""
    err = _error(decode_image, _encode(Image.new("RGB", (32, 32), "red"), fmt), LIMITS)
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert "not a decodable image" in err.message


def test_extreme_aspect_ratio_costs_its_pixels_only() -> None:
    """A 2,400,000x10 PNG (24 MP in a few KB) is decoded and shaped like any 24 MP image: the aspect ratio adds no
    cost since only the crop's box is resampled (and a stretch resamples each output pixel's share)."""
    wide = _encode(Image.new("L", (2_400_000, 10), 90), "PNG", compress_level=9)
    assert len(wide) < 100_000
    for model in (MOBILENET, SSD):
        tensor, size = prepare_image(wide, image_spec_of(model), LIMITS)
        assert size == (2_400_000, 10)
        assert (to_array(tensor) == 90).all()


def test_many_tensors_of_one_name_are_refused_at_once() -> None:
    """Finding the repeated names once took a pass over all the tensors per tensor: 50,000 took minutes."""
    tensors = tuple(to_tensor("IMAGE", np.zeros((1, 1), dtype=np.uint8)) for _ in range(50_000))
    started = time.perf_counter()
    err = _error(check_tensors, tensors, MOBILENET)
    assert time.perf_counter() - started < 1.0
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert "['IMAGE'] sent more than once" in err.message


def test_error_messages_show_a_bounded_part_of_what_was_sent() -> None:
    """Names, datatypes and shapes come from the producer; the message also travels in a NATS header."""
    odd = Tensor(name="n\r\n" * 10_000, datatype="FP32\r\nX: y" * 1000, shape=(1,) * 20_000, data=b"")
    for tensors in [(odd,), (odd, odd), (to_tensor("IMAGE", np.zeros((1, 224, 224, 3), np.uint8)), odd)]:
        err = _error(check_tensors, tensors, MOBILENET)
        assert err.message.isprintable() and len(err.message) < 600, err.message[:200]
    wrong_type = Tensor(name="IMAGE", datatype="FP32\n" * 100, shape=(1, 224, 224, 3), data=b"")
    err = _error(check_tensors, (wrong_type,), MOBILENET)
    assert err.message.isprintable() and len(err.message) < 600
