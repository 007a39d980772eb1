"""Pure image → tensor transforms, driven by what the model declares in the catalog."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from natriton.errors import ErrorCode, MeshError, invalid_argument
from natriton.messages import ModelInfo, Tensor
from natriton.tensors import check_against_specs, to_tensor

ACCEPTED_FORMATS = frozenset({"JPEG", "PNG"})
ORIGINAL_SIZE = "natriton_original_size"


@dataclass(frozen=True, slots=True)
class ImageLayout:
    """How one model wants its image input: name, size, channel order and memory layout."""

    input_name: str
    datatype: str
    height: int
    width: int
    channels_last: bool
    color: str
    resize_shorter: int
    stretch: bool = False
    """``natriton.resize_mode: stretch``: resize to HxW ignoring the aspect ratio (detectors); else shorter side
    to ``resize_shorter`` and a centre crop (classifiers)."""

    @classmethod
    def from_model(cls, info: ModelInfo) -> ImageLayout:
        """Read the layout from the model's declared input and ``natriton.*`` parameters."""
        if len(info.inputs) != 1:
            raise invalid_argument(f"model {info.name!r} takes {len(info.inputs)} inputs; send tensors, not an image")
        spec = info.inputs[0]
        if len(spec.shape) != 3 or (spec.shape[-1] != 3 and spec.shape[0] != 3):
            raise invalid_argument(f"model {info.name!r} input {spec.name!r} {list(spec.shape)} is not an image")
        channels_last = spec.shape[-1] == 3
        height, width = (spec.shape[0], spec.shape[1]) if channels_last else (spec.shape[1], spec.shape[2])
        if height < 1 or width < 1:
            raise invalid_argument(f"model {info.name!r} has a variable image size; send tensors, not an image")
        shorter = int(info.parameters.get("natriton.resize_shorter", str(min(height, width))))
        return cls(
            input_name=spec.name,
            datatype=spec.datatype,
            height=height,
            width=width,
            channels_last=channels_last,
            color=info.parameters.get("natriton.color", "RGB").upper(),
            resize_shorter=max(shorter, height, width),
            stretch=info.parameters.get("natriton.resize_mode", "shorter_crop") == "stretch",
        )


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
        return image.convert("RGB") if image.mode != "RGB" else image
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise invalid_argument(f"image data is corrupt or truncated: {exc}") from exc


def resize_and_crop(image: Image.Image, layout: ImageLayout) -> npt.NDArray[np.uint8]:
    """Resize the shorter side to ``layout.resize_shorter`` (bilinear, antialiased), center-crop to HxW.

    With ``layout.stretch``: resize straight to HxW.
    """
    if layout.stretch:
        return np.asarray(image.resize((layout.width, layout.height), Image.Resampling.BILINEAR), dtype=np.uint8)
    width, height = image.size
    scale = layout.resize_shorter / min(width, height)
    new_w, new_h = max(layout.width, round(width * scale)), max(layout.height, round(height * scale))
    resized = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - layout.width) // 2, (new_h - layout.height) // 2
    cropped = resized.crop((left, top, left + layout.width, top + layout.height))
    return np.asarray(cropped, dtype=np.uint8)


def image_to_tensor(data: bytes, layout: ImageLayout, limits: DecodeLimits) -> Tensor:
    """Encoded image → the model's input tensor with a batch dimension of 1."""
    return prepare_image(data, layout, limits)[0]


def prepare_image(data: bytes, layout: ImageLayout, limits: DecodeLimits) -> tuple[Tensor, tuple[int, int]]:
    """Encoded image → (the model's input tensor with a batch dimension of 1, original (width, height))."""
    image = decode_image(data, limits, layout.resize_shorter)
    source_size = _original_size(image)
    pixels = resize_and_crop(image, layout)
    if layout.color == "BGR":
        pixels = pixels[:, :, ::-1]
    array: npt.NDArray[np.generic] = pixels if layout.channels_last else pixels.transpose(2, 0, 1)
    if layout.datatype == "FP32":
        array = array.astype(np.float32)
    elif layout.datatype != "UINT8":
        raise invalid_argument(f"image inputs of type {layout.datatype} are not supported")
    return to_tensor(layout.input_name, array[np.newaxis]), source_size


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
