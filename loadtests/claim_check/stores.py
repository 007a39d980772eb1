"""The claim-check stores under test: put (producer), fetch (consumer), delete, purge, count.

Every variant ends with the consumer holding the payload as a ``numpy.uint8`` array of the right length:
zero-copy over the bytes a client returned (inline, Redis, JetStream), or one copy out of shared memory (the
mapping is closed afterwards, so the copy is part of the price).

- ``inline``: the bytes themselves in the reference (msgspec ``bytes`` field); fetch = decode the message.
- ``redis``: ``SET key value PX ttl``; reference = key; fetch = ``GET key``.
- ``stream-mem`` / ``stream-file``: JetStream publish with ack and a per-message TTL (``Nats-TTL``); reference =
  sequence; fetch = direct get by sequence.
- ``objstore-mem`` / ``objstore-file``: ``ObjectStore.put`` (nats-py: 128 KB chunks, bucket TTL); reference = object
  name; fetch = ``ObjectStore.get``.
- ``shm-file``: a new file in ``/dev/shm`` per payload; reference = path; fetch = ``mmap``, copy into an array, unmap.
- ``shm-ring``: copy into a slot of one mapped ring file; reference = slot + generation; fetch = copy out, check the
  generation.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats
import numpy as np
import redis.asyncio as aioredis
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ObjectStoreConfig, StorageType, StreamConfig
from nats.js.object_store import ObjectStore

VARIANTS = (
    "inline",
    "redis",
    "stream-mem",
    "stream-file",
    "objstore-mem",
    "objstore-file",
    "shm-file",
    "shm-ring",
)
#: the variants that can delete one payload or let it expire (inline has nothing to delete, the ring reuses slots)
DELETABLE = ("redis", "stream-mem", "stream-file", "objstore-mem", "objstore-file", "shm-file")
#: the variants with a TTL of their own (shared memory has none: someone must unlink)
EXPIRING = ("redis", "stream-mem", "stream-file", "objstore-mem", "objstore-file")

REF_SUBJECT = "cc.ref"
ACK_SUBJECT = "cc.ack"
CTL_RUN = "cc.ctl.run"

#: variant -> (stream, subject, storage)
STREAMS = {
    "stream-mem": ("CC_MEM", "cc.mem.frames", StorageType.MEMORY),
    "stream-file": ("CC_FILE", "cc.file.frames", StorageType.FILE),
}
#: variant -> (bucket used in the loop (long TTL, purged between slices), bucket with a short TTL, storage)
BUCKETS = {
    "objstore-mem": ("cc_mem", "cc_ttl_mem", StorageType.MEMORY),
    "objstore-file": ("cc_file", "cc_ttl_file", StorageType.FILE),
}
#: which server does the work of a variant (for the delete/expiry measurement)
SERVER_OF = {
    "redis": "redis-server",
    "stream-mem": "nats-server",
    "stream-file": "nats-server",
    "objstore-mem": "nats-server",
    "objstore-file": "nats-server",
}


class Ref(msgspec.Struct, array_like=True):
    """The reference the producer publishes (``data`` only for ``inline``)."""

    id: int
    t0: int  # time.monotonic_ns() when the producer started storing (CLOCK_MONOTONIC: one clock for all processes)
    variant: str
    size: int
    key: str = ""  # Redis key, object name, shm path
    seq: int = 0  # stream sequence
    slot: int = -1  # ring slot
    data: bytes = b""


class Ack(msgspec.Struct, array_like=True):
    """The consumer's answer: it has the bytes at ``t1`` (or ``error``)."""

    id: int
    t0: int
    t1: int
    error: str = ""


class RunSpec(msgspec.Struct):
    """One closed-loop slice the orchestrator asks the producer to run."""

    variant: str
    payload: str
    inflight: int
    warmup_s: float
    duration_s: float
    ttl_s: int
    pids: list[int]


class RunResult(msgspec.Struct):
    """What one slice measured (CPU seconds per pid in the same order as ``RunSpec.pids``)."""

    completions: int
    window_s: float
    latencies_ns: list[int]
    cpu_s: list[float]
    errors: int
    error_sample: str
    lost: int


class Ring:
    """One file in ``/dev/shm`` of ``slots`` slots, mapped once by each side; a slot is 16 B header + payload.

    The header holds the generation (the frame id, 0 while being written) and the length; a reader checks the
    generation before and after its copy, so a slot overwritten by a later lap is detected, not read torn.
    """

    HDR = struct.Struct("<QQ")

    def __init__(self, path: Path, slots: int, slot_size: int, *, create: bool) -> None:
        self.path, self.slots, self.stride = path, slots, slot_size + self.HDR.size
        length = slots * self.stride
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600) if create else os.open(path, os.O_RDWR)
        try:
            if create:
                os.ftruncate(fd, length)
            self.mm = mmap.mmap(fd, length)
        finally:
            os.close(fd)

    def write(self, ident: int, data: bytes) -> int:
        """Copy ``data`` into the slot of ``ident``; returns the slot."""
        slot = ident % self.slots
        off = slot * self.stride
        self.HDR.pack_into(self.mm, off, 0, 0)
        self.mm[off + self.HDR.size : off + self.HDR.size + len(data)] = data
        self.HDR.pack_into(self.mm, off, ident, len(data))
        return slot

    def read(self, slot: int, ident: int, size: int) -> np.ndarray:
        """Copy the slot out into a new array; raise if the slot no longer holds ``ident``."""
        off = slot * self.stride
        if self.HDR.unpack_from(self.mm, off) != (ident, size):
            raise LookupError(f"ring slot {slot} no longer holds frame {ident}")
        out = np.empty(size, np.uint8)
        out[:] = np.frombuffer(self.mm, np.uint8, size, off + self.HDR.size)
        if self.HDR.unpack_from(self.mm, off)[0] != ident:
            raise LookupError(f"ring slot {slot} overwritten while frame {ident} was read")
        return out

    def close(self) -> None:
        """Unmap."""
        self.mm.close()


@dataclass
class Clients:
    """The connections one process uses for every variant."""

    nc: Client
    js: JetStreamContext
    redis: aioredis.Redis
    shm_dir: Path
    ring_path: Path
    ring_slots: int
    ring_slot_size: int
    objstores: dict[str, ObjectStore] = field(default_factory=dict)
    ring: Ring | None = None
    shm_written: list[Path] = field(default_factory=list)

    @classmethod
    async def connect(
        cls, nats_url: str, redis_url: str, shm_dir: Path, ring_path: Path, ring_slots: int, ring_slot_size: int
    ) -> Clients:
        """Connect to NATS (64 MB outgoing buffer: 16 raw frames in flight) and Redis (redis-py asyncio, hiredis)."""
        nc = await nats.connect(nats_url, name=f"claim-check-{os.getpid()}", pending_size=64 * 1024 * 1024)
        r = aioredis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)
        c = cls(nc, nc.jetstream(timeout=10), r, shm_dir, ring_path, ring_slots, ring_slot_size)
        for variant, (bucket, ttl_bucket, _) in BUCKETS.items():
            c.objstores[variant] = await c.js.object_store(bucket)
            c.objstores[f"{variant}-ttl"] = await c.js.object_store(ttl_bucket)
        return c

    def ring_for(self, *, create: bool) -> Ring:
        """The ring, mapped on first use (the producer creates the file, the consumer opens it)."""
        if self.ring is None:
            self.ring = Ring(self.ring_path, self.ring_slots, self.ring_slot_size, create=create)
        return self.ring

    async def close(self) -> None:
        """Close every connection and the ring mapping."""
        await self.redis.aclose()
        await self.nc.drain()
        if self.ring is not None:
            self.ring.close()


async def create_resources(js: JetStreamContext, loop_ttl_s: float, expiry_ttl_s: float) -> None:
    """The streams (direct get, per-message TTL) and object-store buckets, before any peer starts."""
    for stream, subject, storage in STREAMS.values():
        await js.add_stream(
            StreamConfig(
                name=stream,
                subjects=[subject],
                storage=storage,
                allow_direct=True,
                allow_msg_ttl=True,
                max_age=loop_ttl_s * 2,
            )
        )
    for bucket, ttl_bucket, storage in BUCKETS.values():
        await js.create_object_store(bucket, ObjectStoreConfig(storage=storage, ttl=loop_ttl_s))
        await js.create_object_store(ttl_bucket, ObjectStoreConfig(storage=storage, ttl=expiry_ttl_s))


# ---------------------------------------------------------------------------------------------------- put
async def put(c: Clients, variant: str, ident: int, data: bytes, ttl_s: int, *, ttl_bucket: bool = False) -> Ref:
    """Store ``data`` once; return the reference (``t0`` left for the caller to fill)."""
    ref = Ref(ident, 0, variant, len(data))
    if variant == "inline":
        ref.data = data
    elif variant == "redis":
        ref.key = f"cc:{os.getpid()}:{ident}"
        await c.redis.set(ref.key, data, px=ttl_s * 1000)
    elif variant in STREAMS:
        ack = await c.js.publish(STREAMS[variant][1], data, msg_ttl=ttl_s)
        ref.seq = ack.seq
    elif variant in BUCKETS:
        ref.key = f"f{os.getpid()}_{ident}"
        await c.objstores[f"{variant}-ttl" if ttl_bucket else variant].put(ref.key, data)
    elif variant == "shm-file":
        path = c.shm_dir / f"f{os.getpid()}_{ident}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        c.shm_written.append(path)
        ref.key = str(path)
    elif variant == "shm-ring":
        ref.slot = c.ring_for(create=True).write(ident, data)
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return ref


# ---------------------------------------------------------------------------------------------------- fetch
def _map_and_copy(path: str, size: int) -> np.ndarray:
    fd = os.open(path, os.O_RDONLY)
    try:
        mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    try:
        out = np.empty(size, np.uint8)
        out[:] = np.frombuffer(mm, np.uint8, size)
    finally:
        mm.close()
    return out


async def fetch(c: Clients, ref: Ref, *, ttl_bucket: bool = False) -> np.ndarray:
    """The payload a reference points to, as a uint8 array (raises when it is gone)."""
    data: Any
    if ref.variant == "inline":
        data = ref.data
    elif ref.variant == "redis":
        data = await c.redis.get(ref.key)
        if data is None:
            raise LookupError(f"redis key {ref.key} missing")
    elif ref.variant in STREAMS:
        data = (await c.js.get_msg(STREAMS[ref.variant][0], seq=ref.seq, direct=True)).data
    elif ref.variant in BUCKETS:
        data = (await c.objstores[f"{ref.variant}-ttl" if ttl_bucket else ref.variant].get(ref.key)).data
    elif ref.variant == "shm-file":
        return _map_and_copy(ref.key, ref.size)
    elif ref.variant == "shm-ring":
        return c.ring_for(create=False).read(ref.slot, ref.id, ref.size)
    else:
        raise ValueError(f"unknown variant {ref.variant!r}")
    return np.frombuffer(data, np.uint8)


# ---------------------------------------------------------------------------------------------------- delete
async def delete(c: Clients, ref: Ref, *, ttl_bucket: bool = False, erase: bool = False) -> None:
    """Delete one stored payload explicitly. Streams: ``no_erase`` unless ``erase`` (nats-py's ``delete_msg``
    sends no ``no_erase``, so the server overwrites the message with random bytes first: a secure erase)."""
    if ref.variant == "redis":
        await c.redis.delete(ref.key)
    elif ref.variant in STREAMS and erase:
        await c.js.delete_msg(STREAMS[ref.variant][0], ref.seq)
    elif ref.variant in STREAMS:
        stream = STREAMS[ref.variant][0]
        body = msgspec.json.encode({"seq": ref.seq, "no_erase": True})
        reply = await c.nc.request(f"$JS.API.STREAM.MSG.DELETE.{stream}", body, timeout=10)
        if not msgspec.json.decode(reply.data).get("success"):
            raise RuntimeError(f"delete {stream} seq {ref.seq}: {reply.data[:200]!r}")
    elif ref.variant in BUCKETS:
        await c.objstores[f"{ref.variant}-ttl" if ttl_bucket else ref.variant].delete(ref.key)
    elif ref.variant == "shm-file":
        os.unlink(ref.key)
    else:
        raise ValueError(f"{ref.variant} has nothing to delete")


async def purge(c: Clients, variant: str) -> None:
    """Housekeeping between slices (outside every measured window): drop everything the variant stored."""
    if variant == "redis":
        await c.redis.flushdb()
    elif variant in STREAMS:
        await c.js.purge_stream(STREAMS[variant][0])
    elif variant in BUCKETS:
        for bucket in BUCKETS[variant][:2]:
            await c.js.purge_stream(f"OBJ_{bucket}")
    elif variant == "shm-file":
        for path in c.shm_written:
            path.unlink(missing_ok=True)
        c.shm_written.clear()


async def count(c: Clients, variant: str, *, ttl_bucket: bool = False) -> int:
    """How many payloads the store still holds (Redis: keys, expired but not yet reclaimed ones included)."""
    if variant == "redis":
        return int(await c.redis.dbsize())
    if variant in STREAMS:
        return int((await c.js.stream_info(STREAMS[variant][0])).state.messages)
    if variant in BUCKETS:
        bucket = BUCKETS[variant][1 if ttl_bucket else 0]
        return int((await c.js.stream_info(f"OBJ_{bucket}")).state.messages)
    if variant == "shm-file":
        return sum(1 for _ in c.shm_dir.iterdir())
    return 0
