"""Pure image → tensor transforms, driven by what the model declares in the catalog."""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass
from typing import assert_never

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from natriton.errors import ErrorCode, MeshError, invalid_argument
from natriton.messages import FrameRef, ModelInfo, Tensor
from natriton.profiles import (
    ClassifierProfile,
    ColorOrder,
    DetectorProfile,
    EmbedderProfile,
    ImageSpec,
    RawProfile,
    ResizeMode,
    VadProfile,
    audio_only,
)
from natriton.tensors import check_against_specs, to_tensor
from natriton_client.protocol import one_line

ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG"})
"""What Pillow calls the files it decodes: MPO is a JPEG with more pictures after it (phones, 3D cameras)."""
OPENERS = ("JPEG", "PNG")
"""The only Pillow plugins that parse a producer's bytes (each other plugin would be more code facing them)."""
REFUSED_MAGIC = (
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\0", "TIFF"),
    (b"MM\0*", "TIFF"),
    (b"\0\0\0\x0cjP", "JPEG 2000"),
)
"""Formats named in the refusal when a producer sends one (WebP is recognised by its RIFF header)."""
ORIGINAL_SIZE = "natriton_original_size"
_PADDING = re.compile(rb"\xff+")


def vad_profile_of(info: ModelInfo) -> VadProfile:
    """How ``info``'s model takes audio; ``invalid_argument`` when it does not."""
    if isinstance(info.profile, VadProfile):
        return info.profile
    raise invalid_argument(f"model {info.name!r} ({info.task}) does not take audio")


def image_spec_of(info: ModelInfo) -> ImageSpec:
    """How ``info``'s model takes an image; ``invalid_argument`` when it takes only tensors or text."""
    spec: ImageSpec | None = None
    match info.profile:
        case ClassifierProfile() | DetectorProfile():
            spec = info.profile.image
        case EmbedderProfile() | RawProfile():
            spec = None
        case VadProfile():
            raise invalid_argument(audio_only(info.name))
        case _ as unreachable:
            assert_never(unreachable)
    if spec is None:
        raise invalid_argument(f"model {info.name!r} ({info.task}) does not take images; send tensors")
    return spec


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """What the decoder refuses: every limit bounds what decoding one image costs (time and memory), so that a
    small hostile file cannot take seconds or gigabytes. The defaults of the last four suit any real photo."""

    max_pixels: int
    min_side: int
    scan_passes: int = 32
    """A progressive JPEG costs a pass over its pixels per scan: at most this many passes of a ``max_pixels``
    image (32 scans at the limit, more for smaller images; encoders write 10 or so)."""
    max_scans: int = 256
    """Scans of any JPEG, however small (each has a fixed cost too)."""
    max_jpeg_header_steps: int = 1024
    """JPEG marker segments (and padding bytes) before the first scan: Pillow reads them one at a time."""
    max_png_chunks: int = 16_384
    """PNG chunks up to the end of the first frame (Pillow reads them one at a time)."""
    max_png_metadata_chunks: int = 64
    """PNG chunks that are not pixel data (``IDAT``); compressed ones (``iCCP``, ``zTXt``) inflate up to 1 MB each."""


def decode_image(data: bytes, limits: DecodeLimits, shorter_side_hint: int = 0) -> Image.Image:
    """Decode JPEG/PNG bytes to an RGB image, checking what decoding will cost before any pixel is decoded.

    ``shorter_side_hint`` lets JPEG decode at a reduced DCT scale that still keeps the shorter side
    at least that large (much faster for camera-size photos). Every failure is a :class:`MeshError`:
    ``payload_too_large`` for a limit, ``invalid_argument`` for anything else.
    """
    check_structure(data, limits)
    try:
        image = Image.open(io.BytesIO(data), formats=OPENERS)
    except Image.DecompressionBombError as exc:  # Pillow's own (higher) limit fires while reading the header
        raise MeshError(ErrorCode.PAYLOAD_TOO_LARGE, f"image is too large: {exc}") from exc
    except MemoryError:
        raise
    except Exception as exc:  # Pillow's plugins raise many types (ValueError, SyntaxError, EOFError, ...)
        refused = sniff_refused_format(data)
        if refused:
            raise invalid_argument(f"image format {refused} is not accepted (JPEG or PNG expected)") from exc
        detail = "" if isinstance(exc, UnidentifiedImageError) else f": {one_line(str(exc))}"
        raise invalid_argument(f"input is not a decodable image (JPEG or PNG expected){detail}") from exc
    if image.format not in ACCEPTED_FORMATS:
        raise invalid_argument(f"image format {image.format} is not accepted (JPEG or PNG expected)")
    width, height = image.size
    check_pixels(width, height, limits)
    if min(width, height) < limits.min_side:
        raise invalid_argument(f"image is {width}x{height}; both sides must be at least {limits.min_side} px")
    if image.format != "PNG":
        check_scans(count_sos_markers(data), width * height, limits)  # an upper bound: SOS markers, anywhere
    image.info[ORIGINAL_SIZE] = (width, height)  # kept by convert(); draft() changes image.size
    try:
        if image.format != "PNG" and shorter_side_hint:
            scale = shorter_side_hint / min(width, height)
            image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
        image.load()
    except Image.DecompressionBombError as exc:
        raise MeshError(ErrorCode.PAYLOAD_TOO_LARGE, f"image is too large: {exc}") from exc
    except MemoryError:
        raise
    except Exception as exc:  # OSError for truncated data, ValueError for an oversized text chunk, ...
        raise invalid_argument(f"image data is corrupt or truncated: {one_line(str(exc))}") from exc
    check_pixels(*image.size, limits)  # what was decoded (a draft is smaller than the header says, never larger)
    return to_rgb(image)


def check_pixels(width: int, height: int, limits: DecodeLimits) -> None:
    """``payload_too_large`` when an image has more pixels than the limit."""
    if width * height > limits.max_pixels:
        raise MeshError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"image is {width}x{height} ({width * height / 1e6:.1f} MP); the limit is {limits.max_pixels / 1e6:.1f} MP",
        )


def scan_limit(pixels: int, limits: DecodeLimits) -> int:
    """The most scans a JPEG of ``pixels`` pixels may have (see :class:`DecodeLimits`)."""
    return max(1, min(limits.max_scans, limits.scan_passes * limits.max_pixels // max(1, pixels)))


def check_scans(scans: int, pixels: int, limits: DecodeLimits) -> None:
    """``payload_too_large`` for a JPEG whose scans would cost more than ``scan_passes`` full-size decodes (a
    progressive JPEG of 130 KB with 1,000 scans of 23 MP took 14 s)."""
    allowed = scan_limit(pixels, limits)
    if scans > allowed:
        raise MeshError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"JPEG has {scans} scans; at {pixels / 1e6:.1f} MP the limit is {allowed} (decoding costs a pass per scan)",
        )


def count_sos_markers(data: bytes) -> int:
    """How many times the JPEG start-of-scan marker (``FF DA``) occurs in ``data``, anywhere: the same number as
    ``data.count(b"\\xff\\xda")`` (occurrences cannot overlap), in a fifth of its time (``bytes.count`` takes
    ~70 µs for an 80 KB photo; numpy looks only at the few ``FF`` bytes)."""
    if len(data) < 2:
        return 0
    octets = np.frombuffer(data, dtype=np.uint8)
    after_ff = np.flatnonzero(octets[:-1] == 0xFF) + 1
    return int(np.count_nonzero(octets[after_ff] == 0xDA))


def check_structure(data: bytes, limits: DecodeLimits) -> None:
    """Count, before Pillow parses them one at a time in Python, the pieces of a JPEG's header or of a PNG:
    ``payload_too_large`` for more than the limits allow (4 MB of them took Pillow 1 to 2 s)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        chunks, metadata = png_chunk_counts(data, limits.max_png_chunks, limits.max_png_metadata_chunks)
        if metadata > limits.max_png_metadata_chunks:
            raise MeshError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"PNG has over {limits.max_png_metadata_chunks} chunks that are not pixel data (text, profiles, ...)",
            )
        if chunks > limits.max_png_chunks:
            raise MeshError(ErrorCode.PAYLOAD_TOO_LARGE, f"PNG has over {limits.max_png_chunks} chunks")
    elif data.startswith(b"\xff\xd8") and jpeg_header_steps(data, limits.max_jpeg_header_steps) > (
        limits.max_jpeg_header_steps
    ):
        raise MeshError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"JPEG has over {limits.max_jpeg_header_steps} marker segments (or padding bytes) before its pixels",
        )


def png_chunk_counts(data: bytes, max_chunks: int, max_metadata: int) -> tuple[int, int]:
    """(chunks, chunks that are not ``IDAT``) up to ``IEND``, or to the second frame of an animated PNG (Pillow
    decodes only the first); counting stops once either limit is passed."""
    pos, chunks, metadata = 8, 0, 0
    animated = pixels_seen = False
    while pos + 8 <= len(data) and chunks <= max_chunks and metadata <= max_metadata:
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"fcTL" and animated and pixels_seen:
            break
        chunks += 1
        if kind == b"IDAT":
            pixels_seen = True
        else:
            metadata += 1
        if kind == b"IEND":
            break
        animated = animated or kind == b"acTL"
        pos += 12 + length
    return chunks, metadata


def jpeg_header_steps(data: bytes, stop_after: int) -> int:
    """The steps Pillow's JPEG marker loop takes before the first scan (SOS): one per marker segment, padding
    byte and junk byte, the way it reads them; counting stops once ``stop_after`` is passed."""
    pos, steps, size = 2, 0, len(data)
    while pos < size and steps <= stop_after:
        if data[pos] != 0xFF:  # junk between segments, read a byte at a time
            following = data.find(b"\xff", pos)
            following = size if following < 0 else following
            steps += following - pos
            pos = following
            continue
        padded = _PADDING.match(data, pos)
        assert padded is not None
        steps += padded.end() - pos  # each 0xFF of padding, and the marker itself
        pos = padded.end() - 1
        if pos + 1 >= size:
            break
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: libjpeg (C) reads the rest
            break
        if marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD9:  # no length follows
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return steps


JPEG_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
"""Start-of-frame markers: the segment that carries a JPEG's size."""
PNG_DECODE_FACTOR = 4
"""How many times a baseline JPEG's cost per pixel a PNG is counted (PNG decoding measured 6-8 times slower)."""
_PEEK_SEGMENTS = 64
_PEEK_PNG_CHUNKS = 1024
_PEEK_PNG_METADATA_CHUNKS = 8
"""Chunks other than pixel data (IHDR and IEND included): compressed ones inflate up to 1 MB each, so a PNG with
more is not counted as cheap."""


def decode_work(data: bytes) -> int | None:
    """A cheap estimate of what decoding ``data`` costs, from its header (no Pillow), in pixel passes: a JPEG's
    pixels times its scans (a progressive JPEG passes over its pixels once per scan), a PNG's pixels times
    :data:`PNG_DECODE_FACTOR`. ``None`` when the header does not say or the file has more pieces than a small
    photo (then it is no cheap decode; the decoder finds out what it is, and refuses what it must)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        chunks, metadata = png_chunk_counts(data, _PEEK_PNG_CHUNKS, _PEEK_PNG_METADATA_CHUNKS)
        if chunks > _PEEK_PNG_CHUNKS or metadata > _PEEK_PNG_METADATA_CHUNKS:
            return None
        width, height = struct.unpack_from(">II", data, 16)
        return int(width) * int(height) * PNG_DECODE_FACTOR
    if not data.startswith(b"\xff\xd8"):
        return None
    pos, size = 2, len(data)
    for _ in range(_PEEK_SEGMENTS):
        if pos + 4 > size or data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in JPEG_SOF_MARKERS:
            if pos + 9 > size:
                return None
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return int(width) * int(height) * max(1, count_sos_markers(data))
        if marker == 0xDA or 0xD0 <= marker <= 0xD9 or marker in (0x00, 0x01):
            return None  # a scan (or a marker without a length) before any frame header
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def sniff_refused_format(data: bytes) -> str:
    """The name of a common image format that is not accepted, from its first bytes ('' when none)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in REFUSED_MAGIC if data.startswith(magic)), "")


SIXTEEN_BIT_GRAY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
"""Pillow's modes for 16-bit grayscale PNGs (``I`` holds them widened to 32 bits)."""
CONVERTIBLE_MODES = frozenset({"RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr"})
"""Modes Pillow converts to 8-bit RGB correctly by itself (alpha is dropped)."""
SIXTEEN_TO_EIGHT_BITS = ((np.arange(65536, dtype=np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
"""0-65535 to 0-255, rounded: a lookup table, so converting costs one 8-bit image and no wide temporaries."""


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any mode a JPEG or PNG decodes to; ``invalid_argument`` for a mode it cannot convert.

    Pillow's own ``convert("RGB")`` clips 16-bit grayscale at 255 (almost every pixel turns white), so those
    are scaled from 0-65535 to 0-255 first.
    """
    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT_GRAY_MODES:
        levels = np.asarray(image)
        if levels.dtype.itemsize > 2:  # mode I: 32-bit
            levels = np.clip(levels, 0, 65535)
        converted = Image.fromarray(SIXTEEN_TO_EIGHT_BITS[levels], mode="L").convert("RGB")
        converted.info.update(image.info)
        return converted
    if image.mode in CONVERTIBLE_MODES:
        return image.convert("RGB")
    raise invalid_argument(f"images of pixel mode {image.mode} are not supported (8/16-bit grey, RGB, RGBA, palette)")


def resize_and_crop(image: Image.Image, layout: ImageSpec) -> npt.NDArray[np.uint8]:
    """Resize the shorter side to ``layout.resize_shorter`` (bilinear, antialiased), center-crop to HxW (computed as
    one resize of the crop's region of the source).

    With ``ResizeMode.STRETCH``: resize straight to HxW.
    """
    return np.asarray(resize_and_crop_image(image, layout), dtype=np.uint8)


def resize_and_crop_image(image: Image.Image, layout: ImageSpec) -> Image.Image:
    """:func:`resize_and_crop` as a Pillow image (``layout.width`` x ``layout.height``, the mode of ``image``)."""
    if layout.resize is ResizeMode.STRETCH:
        return image.resize((layout.width, layout.height), Image.Resampling.BILINEAR)
    width, height = image.size
    scale = layout.resize_shorter / min(width, height)
    new_w, new_h = max(layout.width, round(width * scale)), max(layout.height, round(height * scale))
    # the centre crop of the resized image, in the source's coordinates: only the crop is resampled, so the work is
    # the output's size whatever the input's shape (a 100000x10 image no longer becomes a 2,560,000x256 one)
    left, top = (new_w - layout.width) // 2, (new_h - layout.height) // 2
    sx, sy = width / new_w, height / new_h
    box = (left * sx, top * sy, (left + layout.width) * sx, (top + layout.height) * sy)
    return image.resize((layout.width, layout.height), Image.Resampling.BILINEAR, box=box)


def image_to_tensor(data: bytes, layout: ImageSpec, limits: DecodeLimits) -> Tensor:
    """Encoded image → the model's input tensor with a batch dimension of 1."""
    return prepare_image(data, layout, limits)[0]


def prepare_image(data: bytes, layout: ImageSpec, limits: DecodeLimits) -> tuple[Tensor, tuple[int, int]]:
    """Encoded image → (the model's input tensor with a batch dimension of 1, original (width, height))."""
    stretch = layout.resize is ResizeMode.STRETCH
    hint = max(layout.height, layout.width) if stretch else layout.resize_shorter
    image = decode_image(data, limits, hint)
    return image_to_model_input(image, layout), _original_size(image)


def prepare_frame(
    data: bytes, frame: FrameRef, layout: ImageSpec, limits: DecodeLimits
) -> tuple[Tensor, tuple[int, int]]:
    """A stored video frame (raw RGB or JPEG) → (the model's input tensor, the frame's (width, height))."""
    if frame.encoding != "rgb24":  # an encoded image: decoded under the same limits as any request's
        return prepare_image(data, layout, limits)
    if frame.width * frame.height > limits.max_pixels or min(frame.width, frame.height) < limits.min_side:
        raise invalid_argument(f"a {frame.width}x{frame.height} frame is outside the decode limits")
    if len(data) != frame.width * frame.height * 3:
        raise invalid_argument(
            f"a {frame.width}x{frame.height} rgb24 frame must be {frame.width * frame.height * 3} bytes"
        )
    image = Image.frombuffer("RGB", (frame.width, frame.height), data, "raw", "RGB", 0, 1)
    return image_to_model_input(image, layout), (frame.width, frame.height)


def image_to_model_input(image: Image.Image, layout: ImageSpec) -> Tensor:
    """An RGB image → the model's input tensor (resized, cropped, colour order, layout, type; batch of 1)."""
    if image.mode == "RGB" and layout.color is ColorOrder.RGB and layout.channels_last and layout.datatype == "UINT8":
        # the common layout (uint8 RGB HWC) is Pillow's own byte order: its bytes are the tensor, copied once
        resized = resize_and_crop_image(image, layout)
        shape = (1, resized.height, resized.width, 3)
        return Tensor(name=layout.input, datatype="UINT8", shape=shape, data=resized.tobytes())
    pixels = resize_and_crop(image, layout)
    if layout.color is ColorOrder.BGR:
        pixels = pixels[:, :, ::-1]
    array: npt.NDArray[np.generic] = pixels if layout.channels_last else pixels.transpose(2, 0, 1)
    if layout.datatype == "FP32":
        array = array.astype(np.float32)
    elif layout.datatype != "UINT8":
        raise invalid_argument(f"image inputs of type {layout.datatype} are not supported")
    return to_tensor(layout.input, array[np.newaxis])


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
