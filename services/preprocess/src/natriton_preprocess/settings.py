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
    """Worker threads for decoding and resizing large images (Pillow releases the GIL while it works); 0: every
    image is decoded on the event loop."""
    inline_decode_max_pixels: int = 1_000_000
    """Images this cheap to decode (pixels, times the scans of a progressive JPEG, times 4 for a PNG) are decoded on
    the event loop instead of in a decode thread: the hand-off to a thread and back cost ~250 µs of CPU per image, a
    tenth to a fifth of decoding a 0.25 MP photo, and a decode this small holds the loop a few milliseconds at most
    (raw frames count their pixels). 0: every image goes to a decode thread (when ``decode_threads`` > 0)."""
    frame_ack_wait_s: float = 10.0
    """A camera frame not answered within this time is delivered again (reliable cameras: a copy that died with
    it costs this much delay, nothing else)."""
    frames_in_flight: int = 256
    """Camera frames out at once per frames stream, over all preprocess copies (JetStream ``max_ack_pending``)."""
    reliable_max_deliver: int = 5
    """Deliveries of a reliable camera frame (unanswered within the ack wait, or failed with a transient error)
    before it goes to dead letters (``NATRITON_DEAD_LETTERS``, ``natriton deadletters ls``); at least 2."""
    stream_replicas: int = 1
    """Replicas of the frames and dead-letter streams (and of the camera results stream, which ingest creates
    too); 3 on a NATS cluster of 3 or more, so that an acknowledged frame survives the loss of a server."""
    dead_letter_max_age_s: float = 7 * 24 * 3600.0
    """How long dead letters are kept (at most 1 GiB of them)."""
    max_audio_duration_s: float = 300.0
    """Longer audio is refused (``payload_too_large``) from its header, before decoding. A clip runs through a vad
    model one 32 ms chunk after another (the state carries over), so its time in the router grows with its length."""
    max_audio_bytes: int = 64 * 1024 * 1024
    """Larger audio (file or PCM) is refused before decoding."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reliable_max_deliver < 2:  # 1 would be the real-time rule: failures answered, never kept
            raise ValueError("reliable_max_deliver must be >= 2")
        if self.decode_threads < 0 or self.inline_decode_max_pixels < 0:
            raise ValueError("decode_threads and inline_decode_max_pixels must be >= 0")
        if not 1 <= self.stream_replicas <= 5:
            raise ValueError("stream_replicas must be between 1 and 5")
        if self.dead_letter_max_age_s <= 0 or self.frame_ack_wait_s <= 0:
            raise ValueError("dead_letter_max_age_s and frame_ack_wait_s must be > 0")
