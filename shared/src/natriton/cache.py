"""The Redis result cache. Losing Redis degrades the mesh to "no cache", never to errors."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Generic, TypeVar

import redis.asyncio as aioredis
import xxhash
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from natriton.messages import AudioInput, ImageInput, InputPayload, TextInput

log = logging.getLogger(__name__)

KEY_PREFIX = "natriton:v1:result"
V = TypeVar("V")


def cache_key(model: str, version: str, payload: InputPayload, top_k: int) -> str:
    """Key = model + version + what shapes the answer + a 128-bit xxh3 hash of the input bytes."""
    digest = xxhash.xxh3_128()
    if isinstance(payload, ImageInput):
        digest.update(b"image\0")
        digest.update(payload.data)
    elif isinstance(payload, TextInput):
        digest.update(b"text\0")
        digest.update(payload.text.encode())
    elif isinstance(payload, AudioInput):
        digest.update(b"audio\0")
        digest.update(payload.data)
        if payload.pcm is not None:
            pcm = payload.pcm
            digest.update(f"\0{payload.sample_rate}\0{pcm.datatype}\0{pcm.shape}\0".encode())
            digest.update(pcm.data)
    else:
        for tensor in payload.tensors:
            digest.update(f"{tensor.name}\0{tensor.datatype}\0{tensor.shape}\0".encode())
            digest.update(tensor.data)
    return f"{KEY_PREFIX}:{model}:{version}:k{top_k}:{digest.hexdigest()}"


def connect_redis(url: str, *, timeout_s: float, retries: int = 1, retry_timeouts: bool = False) -> aioredis.Redis:
    """A Redis client whose commands survive a Redis restart: a connection the server dropped is replaced and the
    command sent again (``retries`` times at most, from 20 ms apart); with ``retry_timeouts`` also after a timeout.

    TLS and ACL travel in ``url``: ``rediss://user:password@host:port/db?ssl_ca_certs=…&ssl_certfile=…&ssl_keyfile=…``
    (redis-py reads these query parameters; :func:`natriton.settings.load_settings` builds such a URL from the
    ``NATRITON_REDIS_PASSWORD_FILE`` and ``NATRITON_REDIS_TLS_*`` settings)."""
    errors: list[type[Exception]] = [RedisConnectionError, *([RedisTimeoutError] if retry_timeouts else [])]
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.02), retries=retries),
        retry_on_error=errors,
    )


class ResultCache:
    """Get/set encoded results with a TTL. Every Redis failure is logged (rate-limited) and swallowed."""

    def __init__(self, url: str, *, ttl_s: int, timeout_s: float = 0.25) -> None:
        self._redis = connect_redis(url, timeout_s=timeout_s)
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


class NearCache(Generic[V]):
    """A small in-process copy of recent cache answers, in front of Redis (what a hit costs without a round trip).

    Safe because a result-cache entry never changes under its key: the key names the model version (and, for the
    latest version, the routing policy's revision) and the input's hash, so a copy can only be older, never wrong.
    ``ttl_s`` bounds how long past Redis's own expiry a copy may still answer; ``max_entries`` bounds memory (least
    recently used first out). ``ttl_s`` 0 disables it.
    """

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self.hits = 0

    def get(self, key: str, now: float) -> V | None:
        """The copy under ``key`` if it is younger than ``ttl_s`` (an older one is dropped)."""
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if now >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: str, value: V, now: float) -> None:
        """Keep a copy of what Redis answered (only that: without Redis there is no cache, near or far)."""
        if self.ttl_s <= 0 or self.max_entries <= 0:
            return
        self._entries[key] = (now + self.ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
