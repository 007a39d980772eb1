"""Ingest settings (``NATRITON_*`` environment variables)."""

from __future__ import annotations

from natriton.settings import CommonSettings


class Settings(CommonSettings, frozen=True, kw_only=True):
    """Front-door limits and defaults."""

    max_payload_bytes: int = 4 * 1024 * 1024
    """Requests bigger than this are refused with ``payload_too_large`` (keep below NATS max_payload)."""
    default_timeout_ms: int = 10_000
    """Deadline given to requests that carry none."""
    max_timeout_ms: int = 120_000
    """Longest deadline a producer may ask for."""
    max_top_k: int = 100
    """Largest ``top_k`` a request may ask for; more is ``invalid_argument``."""
    max_pending_per_model: int = 512
    """Requests of one model this copy has in the pipeline at once; more are refused with ``overloaded``."""
    coalesce: bool = True
    """Identical requests (same cache key) in flight at once share one inference."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.default_timeout_ms <= self.max_timeout_ms:
            raise ValueError("need 0 < default_timeout_ms <= max_timeout_ms")
        if self.max_payload_bytes < 1:
            raise ValueError("max_payload_bytes must be >= 1")
