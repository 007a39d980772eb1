"""Image decoding, limits and shaping into the model's declared input tensor."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata
from skimage.transform import resize as sk_resize

from natriton.errors import ErrorCode, MeshError
from natriton.messages import ModelInfo, TensorSpec
from natriton.tensors import check_against_specs, to_array, to_tensor
from natriton_preprocess.logic import (
    DecodeLimits,
    ImageLayout,
    check_tensors,
    decode_image,
    image_to_tensor,
    prepare_image,
)

LIMITS = DecodeLimits(max_pixels=24_000_000, min_side=8)


def _model(
    shape: tuple[int, ...] = (224, 224, 3),
    datatype: str = "UINT8",
    parameters: dict[str, str] | None = None,
    inputs: int = 1,
    max_batch_size: int = 32,
) -> ModelInfo:
    specs = [TensorSpec(name="IMAGE", datatype=datatype, shape=shape)]
    specs += [TensorSpec(name=f"EXTRA{i}", datatype="FP32", shape=(1,)) for i in range(1, inputs)]
    return ModelInfo(
        name="mobilenet_v2",
        versions=("1",),
        task="image_classification",
        max_batch_size=max_batch_size,
        inputs=tuple(specs),
        outputs=(TensorSpec(name="LOGITS", datatype="FP32", shape=(1000,)),),
        parameters={"natriton.task": "image_classification"} if parameters is None else parameters,
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
# ImageLayout.from_model
# ------------------------------------------------------------------------------------------------
def test_layout_from_hwc_uint8_model() -> None:
    layout = ImageLayout.from_model(MOBILENET)
    assert layout == ImageLayout(
        input_name="IMAGE",
        datatype="UINT8",
        height=224,
        width=224,
        channels_last=True,
        color="RGB",
        resize_shorter=256,
    )


def test_layout_defaults_without_parameters() -> None:
    layout = ImageLayout.from_model(_model(parameters={}))
    assert layout.resize_shorter == 224
    assert layout.color == "RGB"


def test_layout_from_chw_fp32_bgr_model() -> None:
    layout = ImageLayout.from_model(_model(shape=(3, 240, 320), datatype="FP32", parameters={"natriton.color": "bgr"}))
    assert (layout.channels_last, layout.height, layout.width, layout.datatype) == (False, 240, 320, "FP32")
    assert layout.color == "BGR"
    assert layout.resize_shorter == 320  # never smaller than the crop


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (_model(inputs=2), "takes 2 inputs"),
        (_model(shape=(1000,)), "is not an image"),
        (_model(shape=(224, 224, 4)), "is not an image"),
        (_model(shape=(-1, -1, 3)), "variable image size"),
    ],
)
def test_layout_refuses_models_that_do_not_take_an_image(model: ModelInfo, match: str) -> None:
    err = _error(ImageLayout.from_model, model)
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert match in err.message


# ------------------------------------------------------------------------------------------------
# image_to_tensor on real photos
# ------------------------------------------------------------------------------------------------
def _reference_crop(photo: np.ndarray, layout: ImageLayout) -> np.ndarray:
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
    layout = ImageLayout.from_model(MOBILENET)
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
    layout = ImageLayout.from_model(MOBILENET)
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
    rgb = to_array(image_to_tensor(coffee_png, ImageLayout.from_model(MOBILENET), LIMITS))[0]
    model = _model(
        shape=(3, 224, 224), datatype="FP32", parameters={"natriton.resize_shorter": "256", "natriton.color": "BGR"}
    )
    tensor = image_to_tensor(coffee_png, ImageLayout.from_model(model), LIMITS)
    assert (tensor.datatype, tensor.shape) == ("FP32", (1, 3, 224, 224))
    chw = to_array(tensor)[0]
    np.testing.assert_array_equal(chw[0], rgb[:, :, 2].astype(np.float32))  # B first
    np.testing.assert_array_equal(chw[2], rgb[:, :, 0].astype(np.float32))


def test_unsupported_image_datatype_is_refused(coffee_png: bytes) -> None:
    layout = ImageLayout.from_model(_model(datatype="INT32"))
    err = _error(image_to_tensor, coffee_png, layout, LIMITS)
    assert err.code is ErrorCode.INVALID_ARGUMENT
    assert "INT32" in err.message


@pytest.mark.parametrize(
    ("mode", "fmt"), [("L", "JPEG"), ("RGBA", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"), ("I;16", "PNG")]
)
def test_other_color_modes_become_rgb(mode: str, fmt: str, coffee: np.ndarray) -> None:
    image = Image.fromarray(coffee)
    image = image.convert("L").convert("I;16") if mode == "I;16" else image.convert(mode)
    tensor = image_to_tensor(_encode(image, fmt), ImageLayout.from_model(MOBILENET), LIMITS)
    assert tensor.shape == (1, 224, 224, 3)


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
    err = _error(image_to_tensor, encoded[: len(encoded) // 2], ImageLayout.from_model(MOBILENET), LIMITS)
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
    layout = ImageLayout.from_model(_model(parameters={"natriton.resize_shorter": resize_shorter}))
    crop = to_array(image_to_tensor(_bands(100, 300, vertical=True), layout, LIMITS))[0]
    assert crop.shape == (224, 224, 3)
    _assert_green(crop, margin=4)


def test_landscape_is_center_cropped() -> None:
    layout = ImageLayout.from_model(_model(parameters={}))
    crop = to_array(image_to_tensor(_bands(300, 100, vertical=False), layout, LIMITS))[0]
    _assert_green(crop, margin=4)


def test_portrait_crop_keeps_the_middle_not_the_top() -> None:
    # a tall image whose top third is red: a top-anchored crop would be red, a squashed one striped
    layout = ImageLayout.from_model(_model(parameters={}))
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
SSD = _model(shape=(300, 300, 3), parameters={"natriton.task": "object_detection", "natriton.resize_mode": "stretch"})


def test_stretch_layout_from_model() -> None:
    layout = ImageLayout.from_model(SSD)
    assert layout.stretch is True
    assert (layout.height, layout.width, layout.resize_shorter) == (300, 300, 300)
    assert ImageLayout.from_model(_model(parameters={"natriton.resize_mode": "shorter_crop"})).stretch is False
    assert ImageLayout.from_model(MOBILENET).stretch is False


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_stretch_keeps_the_whole_image_and_reports_the_original_size(fmt: str, coffee: np.ndarray) -> None:
    photo = np.asarray(Image.fromarray(coffee).resize((512, 400), Image.Resampling.BILINEAR))
    tensor, size = prepare_image(_encode(photo, fmt), ImageLayout.from_model(SSD), LIMITS)
    assert tensor.shape == (1, 300, 300, 3)
    assert tensor.datatype == "UINT8"
    assert size == (512, 400)
    reference = np.asarray(Image.fromarray(photo).resize((300, 300), Image.Resampling.BILINEAR), dtype=np.float64)
    assert np.abs(to_array(tensor)[0].astype(np.float64) - reference).mean() < 6.0


def test_stretch_does_not_crop_the_sides() -> None:
    # three vertical bands on a landscape image: a centre crop would cut into red and blue, a stretch keeps all
    tensor, size = prepare_image(_bands(600, 300, vertical=False), ImageLayout.from_model(SSD), LIMITS)
    pixels = to_array(tensor)[0]
    assert size == (600, 300)
    assert (pixels[:, :95] == RED).all()
    assert (pixels[:, 105:195] == GREEN).all()
    assert (pixels[:, 205:] == BLUE).all()
    cropped = to_array(image_to_tensor(_bands(600, 300, vertical=False), ImageLayout.from_model(_model()), LIMITS))[0]
    assert (cropped[:, :, 1] == 255).mean() > 0.6  # the classifier crop is mostly the green middle


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_draft_decoded_jpeg_reports_the_file_size(mode: str, coffee: np.ndarray) -> None:
    big = Image.fromarray(coffee).resize((2400, 1800), Image.Resampling.BILINEAR).convert(mode)
    data = _encode(big, "JPEG", quality=90)
    layout = ImageLayout.from_model(SSD)
    assert decode_image(data, LIMITS, layout.resize_shorter).size[0] < 2400  # DCT draft scaling did happen
    tensor, size = prepare_image(data, layout, LIMITS)
    assert tensor.shape == (1, 300, 300, 3)
    assert size == (2400, 1800)  # the file's size, not the draft's


def test_crop_layout_also_reports_the_original_size(coffee_jpeg: bytes) -> None:
    tensor, size = prepare_image(coffee_jpeg, ImageLayout.from_model(MOBILENET), LIMITS)
    assert tensor.shape == (1, 224, 224, 3)
    assert size == (600, 400)
