"""The Redis result cache. Losing Redis degrades the mesh to "no cache", never to errors."""

from __future__ import annotations

import logging
import time

import redis.asyncio as aioredis
import xxhash
from redis.exceptions import RedisError

from natriton.messages import ImageInput, InputPayload, TextInput

log = logging.getLogger(__name__)

KEY_PREFIX = "natriton:v1:result"


def cache_key(model: str, version: str, payload: InputPayload, top_k: int) -> str:
    """Key = model + version + what shapes the answer + a 128-bit xxh3 hash of the input bytes."""
    digest = xxhash.xxh3_128()
    if isinstance(payload, ImageInput):
        digest.update(b"image\0")
        digest.update(payload.data)
    elif isinstance(payload, TextInput):
        digest.update(b"text\0")
        digest.update(payload.text.encode())
    else:
        for tensor in payload.tensors:
            digest.update(f"{tensor.name}\0{tensor.datatype}\0{tensor.shape}\0".encode())
            digest.update(tensor.data)
    return f"{KEY_PREFIX}:{model}:{version}:k{top_k}:{digest.hexdigest()}"


class ResultCache:
    """Get/set encoded results with a TTL. Every Redis failure is logged (rate-limited) and swallowed."""

    def __init__(self, url: str, *, ttl_s: int, timeout_s: float = 0.25) -> None:
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=10
        )
        self._ttl_s = ttl_s
        self._last_warning = 0.0
        self.hits = 0
        self.misses = 0
        self.failures = 0

    async def get(self, key: str) -> bytes | None:
        """The cached value, or None on a miss or when Redis is unavailable."""
        try:
            value = await self._redis.get(key)
        except (RedisError, OSError) as exc:
            self._warn("get", exc)
            return None
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value if isinstance(value, bytes) or value is None else value.encode()

    async def set(self, key: str, value: bytes, ttl_s: int | None = None) -> bool:
        """Store ``value``; False when Redis is unavailable."""
        try:
            await self._redis.set(key, value, ex=ttl_s or self._ttl_s)
        except (RedisError, OSError) as exc:
            self._warn("set", exc)
            return False
        return True

    async def ping(self) -> bool:
        """Whether Redis answers now."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()

    def _warn(self, operation: str, exc: BaseException) -> None:
        self.failures += 1
        now = time.monotonic()
        if now - self._last_warning > 10:
            self._last_warning = now
            log.warning("result cache %s failed, continuing without cache: %s", operation, type(exc).__name__)
