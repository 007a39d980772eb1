"""The camera registry in NATS KV: which sources exist, who reads each, and how each is doing.

Three buckets (names in :mod:`natriton.subjects`):

- ``natriton_streams``: one :class:`~natriton.messages.StreamSource` per camera (key: the camera id), written by
  the stream control endpoint and tools; every ingest copy follows it (:class:`StreamSources`).
- ``natriton_stream_leases``: one lease per camera that someone reads. A copy *acquires* a camera by creating the
  key (create fails when it exists, so exactly one copy wins), *renews* it by updating it at the revision it last
  wrote (a compare-and-set: it fails when someone else has taken it meanwhile), and *releases* it by deleting it at
  that revision. The bucket's TTL removes a lease its owner stopped renewing, so when an owner dies, another copy
  takes the camera within about one TTL.
- ``natriton_stream_status``: one :class:`~natriton.messages.StreamStatus` per camera, written by its owner.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Final

import msgspec
from nats.aio.client import Client as NATS
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from natriton.catalog import BucketView, decode_value, open_bucket
from natriton.errors import invalid_argument
from natriton.messages import Codec, StreamSource, StreamStatus
from natriton.subjects import STREAM_LEASES_BUCKET, STREAM_STATUS_BUCKET, STREAMS_BUCKET

SOURCES: Final[Codec[StreamSource]] = Codec(StreamSource)
STATUSES: Final[Codec[StreamStatus]] = Codec(StreamStatus)
CAMERA_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A camera id: a NATS subject token and a KV key at once."""
DEFAULT_LEASE_TTL_S: Final = 10.0
"""How long a lease outlives its owner's last renewal (owners renew every third of it)."""


def validate_source(source: StreamSource) -> StreamSource:
    """``source`` when it can be read, else ``invalid_argument`` naming the field."""
    if not CAMERA_ID.fullmatch(source.camera):
        raise invalid_argument(f"camera id {source.camera[:64]!r}: use 1 to 64 of A-Z a-z 0-9 _ -")
    if not source.url.strip() or len(source.url) > 4096:
        raise invalid_argument(f"camera {source.camera}: url must be 1 to 4096 characters")
    if not (0.0 <= source.fps <= 240.0):
        raise invalid_argument(f"camera {source.camera}: fps must be between 0 (every frame) and 240")
    if not source.model or len(source.model) > 200:
        raise invalid_argument(f"camera {source.camera}: model must be 1 to 200 characters")
    if len(source.audio_model) > 200:
        raise invalid_argument(f"camera {source.camera}: audio_model must be at most 200 characters")
    return source


class StreamSources(BucketView[StreamSource]):
    """The cameras to read, as a live view of ``natriton_streams`` (created on first use)."""

    bucket = STREAMS_BUCKET
    create = True

    def __init__(self) -> None:
        super().__init__(SOURCES)


async def open_registry(nc: NATS, lease_ttl_s: float = DEFAULT_LEASE_TTL_S) -> StreamRegistry:
    """The three buckets, created when missing (the leases bucket with ``lease_ttl_s`` as its TTL)."""
    sources = await open_bucket(nc, STREAMS_BUCKET, create=True)
    statuses = await open_bucket(nc, STREAM_STATUS_BUCKET, create=True)
    js = nc.jetstream()
    try:
        leases = await js.key_value(STREAM_LEASES_BUCKET)
    except BucketNotFoundError:
        leases = await js.create_key_value(bucket=STREAM_LEASES_BUCKET, history=1, ttl=lease_ttl_s)
    return StreamRegistry(sources, statuses, leases)


@dataclass(frozen=True)
class Lease:
    """A camera held by ``owner`` since KV revision ``revision`` (the one to renew or release at)."""

    camera: str
    owner: str
    revision: int


@dataclass
class StreamRegistry:
    """Read and write the camera buckets."""

    sources: KeyValue
    statuses: KeyValue
    leases: KeyValue

    # ------------------------------------------------------------------ sources
    async def put_source(self, source: StreamSource) -> int:
        """Add or replace a camera (validated); returns the KV revision."""
        validate_source(source)
        return int(await self.sources.put(source.camera, SOURCES.encode(source, json=True)))

    async def remove_source(self, camera: str) -> bool:
        """Remove a camera; False when there was none. Its owner stops reading it."""
        if await self.get_source(camera) is None:
            return False
        await self.sources.delete(camera)
        return True

    async def get_source(self, camera: str) -> StreamSource | None:
        if not CAMERA_ID.fullmatch(camera):
            return None
        try:
            entry = await self.sources.get(camera)
        except KeyNotFoundError:
            return None
        return decode_value(SOURCES, entry.value) if entry.value else None

    async def list_sources(self) -> list[StreamSource]:
        """Every camera, by id."""
        found = []
        for camera in await _keys(self.sources):
            source = await self.get_source(camera)
            if source is not None:
                found.append(source)
        return sorted(found, key=lambda s: s.camera)

    # ------------------------------------------------------------------ status
    async def put_status(self, status: StreamStatus) -> None:
        await self.statuses.put(status.camera, STATUSES.encode(status, json=True))

    async def get_status(self, camera: str) -> StreamStatus | None:
        if not CAMERA_ID.fullmatch(camera):
            return None
        try:
            entry = await self.statuses.get(camera)
        except KeyNotFoundError:
            return None
        try:
            return decode_value(STATUSES, entry.value) if entry.value else None
        except msgspec.MsgspecError:
            return None

    async def remove_status(self, camera: str) -> None:
        with contextlib.suppress(KeyNotFoundError):
            await self.statuses.delete(camera)

    # ------------------------------------------------------------------ leases
    async def acquire(self, camera: str, owner: str) -> Lease | None:
        """Take ``camera`` for ``owner`` if nobody holds it; None when someone does."""
        try:
            revision = await self.leases.create(camera, owner.encode())
        except KeyWrongLastSequenceError:
            return None
        return Lease(camera, owner, int(revision))

    async def renew(self, lease: Lease) -> Lease | None:
        """Extend ``lease``; None when it was lost (expired and taken by another copy, or released)."""
        try:
            revision = await self.leases.update(lease.camera, lease.owner.encode(), last=lease.revision)
        except KeyWrongLastSequenceError:
            return None
        return Lease(lease.camera, lease.owner, int(revision))

    async def release(self, lease: Lease) -> None:
        """Give ``lease`` up at once (if still held), so another copy can take the camera."""
        with contextlib.suppress(KeyWrongLastSequenceError, KeyNotFoundError):
            await self.leases.delete(lease.camera, last=lease.revision)

    async def holder(self, camera: str) -> str:
        """The owner of ``camera``'s lease ('' when nobody holds it)."""
        try:
            entry = await self.leases.get(camera)
        except KeyNotFoundError:
            return ""
        return entry.value.decode() if entry.value else ""


async def _keys(kv: KeyValue) -> list[str]:
    try:
        return [str(k) for k in await kv.keys()]
    except NoKeysError:  # an empty bucket
        return []
