"""Postprocess settings (``NATRITON_*`` environment variables)."""

from __future__ import annotations

from natriton.settings import CommonSettings


class Settings(CommonSettings, frozen=True, kw_only=True):
    """How long results stay in the cache."""

    cache_ttl_s: int = 3600
    """Lifetime of cached answers in seconds (a model's ``natriton.cache_ttl_s`` overrides it)."""
