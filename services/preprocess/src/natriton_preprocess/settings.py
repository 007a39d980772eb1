"""Preprocess settings (``NATRITON_*`` environment variables)."""

from __future__ import annotations

from natriton.settings import CommonSettings


class Settings(CommonSettings, frozen=True, kw_only=True):
    """Limits that protect the decoder, and how many images decode at once."""

    max_image_pixels: int = 24_000_000
    """Images with more pixels are refused before decoding (decompression bombs)."""
    min_image_side: int = 8
    """Images narrower or shorter than this carry no usable content and are refused."""
    decode_threads: int = 2
    """Worker threads for decoding and resizing (Pillow releases the GIL while it works)."""
