"""Pure image → tensor transforms, driven by what the model declares in the catalog."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import assert_never

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from natriton.errors import ErrorCode, MeshError, invalid_argument
from natriton.messages import ModelInfo, Tensor
from natriton.profiles import (
    ClassifierProfile,
    ColorOrder,
    DetectorProfile,
    EmbedderProfile,
    ImageSpec,
    RawProfile,
    ResizeMode,
)
from natriton.tensors import check_against_specs, to_tensor

ACCEPTED_FORMATS = frozenset({"JPEG", "PNG"})
ORIGINAL_SIZE = "natriton_original_size"


def image_spec_of(info: ModelInfo) -> ImageSpec:
    """How ``info``'s model takes an image; ``invalid_argument`` when it takes only tensors or text."""
    spec: ImageSpec | None = None
    match info.profile:
        case ClassifierProfile() | DetectorProfile():
            spec = info.profile.image
        case EmbedderProfile() | RawProfile():
            spec = None
        case _ as unreachable:
            assert_never(unreachable)
    if spec is None:
        raise invalid_argument(f"model {info.name!r} ({info.task}) does not take images; send tensors")
    return spec


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """What the decoder refuses."""

    max_pixels: int
    min_side: int


def decode_image(data: bytes, limits: DecodeLimits, shorter_side_hint: int = 0) -> Image.Image:
    """Decode JPEG/PNG bytes to an RGB image, checking the size before any pixel is decoded.

    ``shorter_side_hint`` lets JPEG decode at a reduced DCT scale that still keeps the shorter side
    at least that large (much faster for camera-size photos).
    """
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # Pillow's own (higher) limit fires while reading the header
        raise MeshError(ErrorCode.PAYLOAD_TOO_LARGE, f"image is too large: {exc}") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise invalid_argument("input is not a decodable image (JPEG or PNG expected)") from exc
    if image.format not in ACCEPTED_FORMATS:
        raise invalid_argument(f"image format {image.format} is not accepted (JPEG or PNG expected)")
    width, height = image.size
    if width * height > limits.max_pixels:
        raise MeshError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"image is {width}x{height} ({width * height / 1e6:.1f} MP); the limit is {limits.max_pixels / 1e6:.1f} MP",
        )
    if min(width, height) < limits.min_side:
        raise invalid_argument(f"image is {width}x{height}; both sides must be at least {limits.min_side} px")
    image.info[ORIGINAL_SIZE] = (width, height)  # kept by convert(); draft() changes image.size
    if image.format == "JPEG" and shorter_side_hint:
        scale = shorter_side_hint / min(width, height)
        image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
    try:
        image.load()
        return to_rgb(image)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise invalid_argument(f"image data is corrupt or truncated: {exc}") from exc


SIXTEEN_BIT_GRAY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
"""Pillow's modes for 16-bit grayscale PNGs (``I`` holds them widened to 32 bits)."""
CONVERTIBLE_MODES = frozenset({"RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr"})
"""Modes Pillow converts to 8-bit RGB correctly by itself (alpha is dropped)."""


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any mode a JPEG or PNG decodes to; ``invalid_argument`` for a mode it cannot convert.

    Pillow's own ``convert("RGB")`` clips 16-bit grayscale at 255 (almost every pixel turns white), so those
    are scaled from 0-65535 to 0-255 first.
    """
    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT_GRAY_MODES:
        wide = np.asarray(image).astype(np.uint32)
        eight_bit = ((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        converted = Image.fromarray(eight_bit, mode="L").convert("RGB")
        converted.info.update(image.info)
        return converted
    if image.mode in CONVERTIBLE_MODES:
        return image.convert("RGB")
    raise invalid_argument(f"images of pixel mode {image.mode} are not supported (8/16-bit grey, RGB, RGBA, palette)")


def resize_and_crop(image: Image.Image, layout: ImageSpec) -> npt.NDArray[np.uint8]:
    """Resize the shorter side to ``layout.resize_shorter`` (bilinear, antialiased), center-crop to HxW.

    With ``ResizeMode.STRETCH``: resize straight to HxW.
    """
    if layout.resize is ResizeMode.STRETCH:
        return np.asarray(image.resize((layout.width, layout.height), Image.Resampling.BILINEAR), dtype=np.uint8)
    width, height = image.size
    scale = layout.resize_shorter / min(width, height)
    new_w, new_h = max(layout.width, round(width * scale)), max(layout.height, round(height * scale))
    resized = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - layout.width) // 2, (new_h - layout.height) // 2
    cropped = resized.crop((left, top, left + layout.width, top + layout.height))
    return np.asarray(cropped, dtype=np.uint8)


def image_to_tensor(data: bytes, layout: ImageSpec, limits: DecodeLimits) -> Tensor:
    """Encoded image → the model's input tensor with a batch dimension of 1."""
    return prepare_image(data, layout, limits)[0]


def prepare_image(data: bytes, layout: ImageSpec, limits: DecodeLimits) -> tuple[Tensor, tuple[int, int]]:
    """Encoded image → (the model's input tensor with a batch dimension of 1, original (width, height))."""
    stretch = layout.resize is ResizeMode.STRETCH
    hint = max(layout.height, layout.width) if stretch else layout.resize_shorter
    image = decode_image(data, limits, hint)
    source_size = _original_size(image)
    pixels = resize_and_crop(image, layout)
    if layout.color is ColorOrder.BGR:
        pixels = pixels[:, :, ::-1]
    array: npt.NDArray[np.generic] = pixels if layout.channels_last else pixels.transpose(2, 0, 1)
    if layout.datatype == "FP32":
        array = array.astype(np.float32)
    elif layout.datatype != "UINT8":
        raise invalid_argument(f"image inputs of type {layout.datatype} are not supported")
    return to_tensor(layout.input, array[np.newaxis]), source_size


def _original_size(image: Image.Image) -> tuple[int, int]:
    """The size before any JPEG draft (DCT) downscaling."""
    size = image.info.get(ORIGINAL_SIZE)
    return size if isinstance(size, tuple) else image.size


def check_tensors(tensors: tuple[Tensor, ...], info: ModelInfo) -> tuple[Tensor, ...]:
    """Validate ready-made tensors against the model's declared inputs and batch limit."""
    check_against_specs(tensors, info.inputs, info.name)
    batch = tensors[0].shape[0]
    if info.max_batch_size and batch > info.max_batch_size:
        raise invalid_argument(f"model {info.name!r} takes at most {info.max_batch_size} items, got {batch}")
    return tensors
