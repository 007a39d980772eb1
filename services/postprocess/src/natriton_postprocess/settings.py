"""Postprocess settings (``NATRITON_*`` environment variables)."""

from __future__ import annotations

from natriton.settings import CommonSettings


class Settings(CommonSettings, frozen=True, kw_only=True):
    """Postprocess takes only the common settings (``cache_ttl_s`` among them: how long its answers stay cached)."""
