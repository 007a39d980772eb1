"""The frame store: pixels are stored once and hops carry a small :class:`~natriton.messages.FrameRef`.

A camera's owner :meth:`~FrameStore.put`\\ s each frame it sends for analysis, preprocess :meth:`~FrameStore.get`\\ s
it, and the owner :meth:`~FrameStore.delete`\\ s it once the frame is answered; a TTL removes what an owner that
died left behind. Unlike the result cache, the store is on the frame path: an unreachable store is an
``unavailable`` error, not a silent miss. The store is Redis (``NATRITON_REDIS_URL``); the choice is recorded in
``docs/decisions/0006-claim-check-store.md``.
"""

from __future__ import annotations

import contextlib
from typing import Final

from redis.exceptions import RedisError

from natriton.cache import connect_redis
from natriton.errors import ErrorCode, MeshError

KEY_PREFIX: Final = "natriton:v1:frame"


def frame_key(mesh_id: str) -> str:
    """The store key of the frame a request (mesh id) refers to."""
    return f"{KEY_PREFIX}:{mesh_id}"


class FrameStore:
    """Frames in Redis with a TTL."""

    def __init__(self, url: str, *, timeout_s: float = 2.0) -> None:
        self._redis = connect_redis(url, timeout_s=timeout_s, retries=2, retry_timeouts=True)

    async def put(self, key: str, data: bytes, ttl_s: float) -> None:
        """Store ``data`` under ``key`` for ``ttl_s`` seconds."""
        try:
            await self._redis.set(key, data, px=max(1, int(ttl_s * 1000)))
        except (RedisError, OSError) as exc:
            raise MeshError(ErrorCode.UNAVAILABLE, f"frame store: {type(exc).__name__}", retry_after_ms=500) from exc

    async def get(self, key: str) -> bytes:
        """The frame's bytes; ``not_found`` when it expired or was deleted, ``unavailable`` when the store is."""
        try:
            value = await self._redis.get(key)
        except (RedisError, OSError) as exc:
            raise MeshError(ErrorCode.UNAVAILABLE, f"frame store: {type(exc).__name__}", retry_after_ms=500) from exc
        if value is None:
            raise MeshError(ErrorCode.NOT_FOUND, "the frame has expired from the frame store")
        return value if isinstance(value, bytes) else value.encode()

    async def delete(self, key: str) -> None:
        """Remove a frame (answered); failures are ignored (the TTL removes it anyway)."""
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(key)

    async def close(self) -> None:
        await self._redis.aclose()
