"""Tensors handed to the router through ``/dev/shm`` when sender and router share a host (decision 0011).

Sent inline, a producer's 150 KB tensor crosses nats-server twice before the router calls Triton: producer →
ingest, then ingest → router (a JPEG's decoded tensor: preprocess → router). The second crossing costs a 150 KB
publish in the sender (the command is built by concatenation and written to a loopback socket, whose kernel work
both ends bill to the sender), nats-server's read and write, and the router's read and parse. When the sender and
every router copy see the same ``/dev/shm`` (the same :func:`shm_domain`, which each copy puts in its heartbeats),
the sender instead copies the tensor bytes into one of its own shared-memory slots and sends the router a ~150 B
reference (:class:`HandoffRef`); the router copies them out, and everything after is as before.

Who owns what:

- **The sender owns its slots** (:class:`SlotPool`): POSIX shared-memory segments named
  ``natriton-<boot>-<n>``, one per slot, sized to a power of two (at least 256 KiB), made on demand up to a byte
  budget. Ingest takes a slot for one request and gives it back when it has that request's one reply (or gave up on
  it) — ingest owns the reply (decision 0003), so no release message is needed. Preprocess (a decoded JPEG's
  tensor) never sees the reply: its slots are given back once the router has marked them read (the router writes
  the generation it read into the slot's header) or once the request's deadline has passed. A slot given back
  rests :data:`QUARANTINE_S` before it is used again. Segments are unlinked on stop, and by Python's resource
  tracker when the process dies (even by SIGKILL).
- **The generation check.** Each slot starts with a 64-byte header holding a generation number (and the last
  generation a reader marked read); taking a slot raises it, giving it back raises it again. The reference carries
  the generation it was written with, and the router (:class:`SlotReader`) reads the generation before and after
  copying: if either differs, the sender has given the slot back meanwhile (the request was answered, gave up, or
  its deadline passed), so the copy is refused as stale and nothing unrelated is ever inferred. A read mark that
  comes late names an old generation and frees nothing.
- **Any mismatch falls back to inline.** No slot free within the budget, a tensor below ``min_bytes``, a router
  copy on another host (or one that says nothing of its domain), or a stage watch not settled yet: the tensor goes
  inline, as before.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import struct
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from pathlib import Path
from typing import Final

import msgspec

from natriton.metrics import Metric, counter, gauge

log = logging.getLogger(__name__)

HEADER_BYTES: Final = 64
"""The slot's header: its generation (u64, little-endian), the generation a reader marked read (u64), padding;
data starts after it."""
READ_MARK_OFFSET: Final = 8
MIN_SLOT_BYTES: Final = 256 * 1024
QUARANTINE_S: Final = 0.25
"""How long a slot given back rests before it is taken again (a reader still copying from it has long finished)."""
SHM_DIR: Final = Path("/dev/shm")
SEGMENT_PREFIX: Final = "natriton-"
_GENERATION: Final = struct.Struct("<Q")


def shm_domain() -> str:
    """Which ``/dev/shm`` this process sees: the kernel's boot id and the device and inode of ``/dev/shm``. Two
    processes with the same value can open each other's segments (same host; same mount, e.g. a pod, or containers
    sharing ``ipc``/``/dev/shm``); '' when this host has no ``/dev/shm``."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        shm = SHM_DIR.stat()
    except OSError:
        return ""
    return f"{boot}:{shm.st_dev}:{shm.st_ino}"


class HandoffRef(msgspec.Struct, frozen=True, kw_only=True):
    """Where a request's input bytes wait: ``sizes[i]`` bytes of input i, one after the other, in ``segment``
    after its header, written at ``generation`` by a process whose :func:`shm_domain` is ``domain``."""

    domain: str
    segment: str
    generation: int
    sizes: tuple[int, ...]


class StaleHandoffError(Exception):
    """The slot was given back (or never existed here): its bytes are not this request's."""


@dataclass(eq=False, slots=True)
class Slot:
    """One segment of the pool."""

    memory: shared_memory.SharedMemory
    capacity: int
    """Data bytes it holds (its size less the header)."""
    generation: int = 0
    free_since: float = 0.0
    expires_s: float | None = None
    """Lent until the reader marks it read or this ``time.monotonic()`` passes (None: the owner gives it back)."""

    @property
    def name(self) -> str:
        return self.memory.name

    @property
    def view(self) -> memoryview:
        buf = self.memory.buf
        assert buf is not None, "the segment is closed"
        return buf


@dataclass(eq=False, slots=True)
class Taken:
    """A slot holding one request's inputs, and the reference that points at them."""

    slot: Slot
    ref: HandoffRef


@dataclass
class SlotPool:
    """Ingest's slots (one process, one event loop: not thread-safe)."""

    prefix: str
    """Segment names start with it: ``natriton-<boot id>``."""
    domain: str
    max_bytes: int
    """The most shared memory the pool holds (segments' sizes summed)."""
    quarantine_s: float = QUARANTINE_S
    free: dict[int, deque[Slot]] = field(default_factory=dict)
    """Slots given back, by size class, oldest first."""
    slots: list[Slot] = field(default_factory=list)
    lent: list[Slot] = field(default_factory=list)
    """Slots the reader gives back (by marking them read) or their expiry does."""
    bytes_held: int = 0
    made: int = 0
    in_use: int = 0
    handed: int = 0
    """Requests handed off through the pool."""
    no_room: int = 0
    """Requests sent inline because no slot was free within the budget."""

    def take(self, buffers: Sequence[bytes], *, expires_s: float | None = None) -> Taken | None:
        """Copy ``buffers`` (a request's inputs, in order) into a free slot; None when none fits the budget.

        ``expires_s`` (``time.monotonic()``): the slot is given back when the reader marks it read, or then, at the
        latest; None: the caller gives it back (:meth:`give_back`)."""
        if self.lent:
            self._reclaim()
        total = sum(len(b) for b in buffers)
        capacity = max(MIN_SLOT_BYTES, 1 << max(0, (HEADER_BYTES + total - 1).bit_length())) - HEADER_BYTES
        slot = self._reuse(capacity) or self._make(capacity)
        if slot is None:
            self.no_room += 1
            return None
        slot.generation += 1
        buf = slot.view
        _GENERATION.pack_into(buf, 0, slot.generation)
        offset = HEADER_BYTES
        for data in buffers:
            buf[offset : offset + len(data)] = data
            offset += len(data)
        self.in_use += 1
        self.handed += 1
        slot.expires_s = expires_s
        if expires_s is not None:
            self.lent.append(slot)
        ref = HandoffRef(
            domain=self.domain, segment=slot.name, generation=slot.generation, sizes=tuple(len(b) for b in buffers)
        )
        return Taken(slot, ref)

    def give_back(self, taken: Taken) -> None:
        """The request is answered (or given up): the slot's bytes are stale from now on."""
        if taken.slot.generation == taken.ref.generation:  # else given back already
            self._release_slot(taken.slot)

    def _release_slot(self, slot: Slot) -> None:
        slot.generation += 1
        _GENERATION.pack_into(slot.view, 0, slot.generation)
        slot.free_since = time.monotonic()
        self.in_use -= 1
        self.free.setdefault(slot.capacity, deque()).append(slot)

    def _reclaim(self) -> None:
        """Give back the lent slots the reader has marked read, and those past their expiry."""
        now = time.monotonic()
        still: list[Slot] = []
        for slot in self.lent:
            read = _GENERATION.unpack_from(slot.view, READ_MARK_OFFSET)[0] == slot.generation
            if read or (slot.expires_s is not None and now >= slot.expires_s):
                self._release_slot(slot)
            else:
                still.append(slot)
        self.lent = still

    def close(self) -> None:
        """Unlink every segment (those still in use too: their readers then fail as stale)."""
        for slot in self.slots:
            _release(slot.memory)
        self.slots.clear()
        self.lent.clear()
        self.free.clear()

    def stats(self) -> dict[str, int]:
        return {
            "segments": self.made,
            "bytes": self.bytes_held,
            "in_use": self.in_use,
            "handed": self.handed,
            "no_room": self.no_room,
        }

    def _reuse(self, capacity: int) -> Slot | None:
        queue = self.free.get(capacity)
        if queue and time.monotonic() - queue[0].free_since >= self.quarantine_s:
            return queue.popleft()
        return None

    def _make(self, capacity: int) -> Slot | None:
        size = capacity + HEADER_BYTES
        if self.bytes_held + size > self.max_bytes:
            return None
        try:
            memory = shared_memory.SharedMemory(name=f"{self.prefix}-{self.made}", create=True, size=size)
        except OSError as exc:  # /dev/shm full or not writable: inline from now on for this size
            log.warning("hand-off: could not make a %d-byte segment (%s): sending inline", size, exc)
            self.max_bytes = self.bytes_held
            return None
        self.made += 1
        self.bytes_held += size
        slot = Slot(memory, capacity)
        self.slots.append(slot)
        return slot


class Sender:
    """A sending service's side (ingest, preprocess): its slots, and the rule for using them: inputs of at least
    ``min_bytes``, while ``shares_memory()`` says every router copy sees this copy's ``/dev/shm``."""

    def __init__(self, shares_memory: Callable[[], bool], min_bytes: int, pool: SlotPool | None = None) -> None:
        self.pool = pool
        """None until :meth:`open` (or with hand-off off): everything goes inline."""
        self.shares_memory = shares_memory
        self.min_bytes = min_bytes
        self.other_host = 0
        """Large inputs sent inline because a router copy does not share the memory (or the watch is not settled)."""

    def open(self, instance: str, domain: str, max_bytes: int) -> None:
        """Make the pool: up to ``max_bytes`` of segments named after ``instance`` (none without a ``domain``, i.e.
        hand-off off or no ``/dev/shm``, or with a budget of 0)."""
        if domain and max_bytes and self.pool is None:
            self.pool = SlotPool(f"{SEGMENT_PREFIX}{instance}", domain, max_bytes)

    def offer(self, buffers: Sequence[bytes], *, expires_s: float | None = None) -> Taken | None:
        """A slot holding ``buffers``, or None: send them inline (see :meth:`SlotPool.take` for ``expires_s``)."""
        if self.pool is None or sum(len(b) for b in buffers) < self.min_bytes:
            return None
        if not self.shares_memory():
            self.other_host += 1
            return None
        return self.pool.take(buffers, expires_s=expires_s)

    def give_back(self, taken: Taken | None) -> None:
        if taken is not None and self.pool is not None:
            self.pool.give_back(taken)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def stats(self) -> dict[str, int]:
        return {**(self.pool.stats() if self.pool is not None else {}), "inline_other_host": self.other_host}

    def metrics(self, service: str) -> list[Metric]:
        """``natriton_<service>_handoff_total{outcome}`` and ``natriton_<service>_handoff_bytes``."""
        pool = self.pool.stats() if self.pool is not None else {}
        handed = counter(
            f"natriton_{service}_handoff",
            "Large tensors by how they went to the router: shared_memory (decision 0011), inline_no_room (every slot "
            "busy), inline_other_host (a router copy does not share this copy's /dev/shm).",
            ["outcome"],
        )
        handed.add_metric(["shared_memory"], pool.get("handed", 0))
        handed.add_metric(["inline_no_room"], pool.get("no_room", 0))
        handed.add_metric(["inline_other_host"], self.other_host)
        held = gauge(f"natriton_{service}_handoff_bytes", "Shared memory this copy's hand-off slots hold.", [])
        held.add_metric([], pool.get("bytes", 0))
        return [handed, held]


def _release(memory: shared_memory.SharedMemory) -> None:
    with contextlib.suppress(OSError, BufferError):
        memory.close()
    with contextlib.suppress(OSError):
        memory.unlink()


@dataclass(frozen=True, slots=True)
class _Mapping:
    data: mmap.mmap
    writable: bool


class SlotReader:
    """The router's side: copies a request's inputs out of the sender's slot, checking the generation around the
    copy, then marks the slot read (its sender may take it again).

    Segments are opened by path (not through ``SharedMemory``, whose resource tracker would unlink another
    process's segment when this one exits) and kept mapped, the most recent :attr:`max_open`; read-only where the
    segment cannot be opened for writing (its sender then waits for the deadline to take the slot again).
    """

    def __init__(self, domain: str, *, max_open: int = 256) -> None:
        self.domain = domain
        self.max_open = max_open
        self._maps: OrderedDict[str, _Mapping] = OrderedDict()
        self.read_count = 0
        self.stale = 0

    def read(self, ref: HandoffRef) -> list[bytes]:
        """Input i's bytes for each ``ref.sizes[i]``; :class:`StaleHandoffError` when the slot is not this
        request's any more, or cannot be opened from here."""
        if not self.domain or ref.domain != self.domain:
            self.stale += 1
            raise StaleHandoffError("the tensor was handed off in shared memory on another host")
        view = self._map(ref.segment)
        data = view.data
        end = HEADER_BYTES + sum(ref.sizes)
        if end > len(data) or _GENERATION.unpack_from(data, 0)[0] != ref.generation:
            self.stale += 1
            raise StaleHandoffError("the hand-off slot was given back before the router read it")
        parts: list[bytes] = []
        offset = HEADER_BYTES
        for size in ref.sizes:
            parts.append(data[offset : offset + size])
            offset += size
        if _GENERATION.unpack_from(data, 0)[0] != ref.generation:
            self.stale += 1
            raise StaleHandoffError("the hand-off slot was given back while the router read it")
        if view.writable:  # a late mark (an old generation) frees nothing: the sender compares it with its own
            _GENERATION.pack_into(view.data, READ_MARK_OFFSET, ref.generation)
        self.read_count += 1
        return parts

    def close(self) -> None:
        for view in self._maps.values():
            with contextlib.suppress(BufferError):
                view.data.close()
        self._maps.clear()

    def _map(self, segment: str) -> _Mapping:
        view = self._maps.get(segment)
        if view is not None:
            self._maps.move_to_end(segment)
            return view
        if "/" in segment or not segment.startswith(SEGMENT_PREFIX):  # only the mesh's own slots, never another file
            raise StaleHandoffError(f"not a hand-off segment: {segment[:64]!r}")
        path = SHM_DIR / segment
        try:
            try:
                fd, writable = os.open(path, os.O_RDWR), True
            except PermissionError:
                fd, writable = os.open(path, os.O_RDONLY), False
        except OSError as exc:
            self.stale += 1
            raise StaleHandoffError(f"hand-off segment {segment!r} is gone ({exc.strerror})") from exc
        try:
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            view = _Mapping(mmap.mmap(fd, 0, prot=prot), writable)
        finally:
            os.close(fd)
        self._maps[segment] = view
        while len(self._maps) > self.max_open:
            _, oldest = self._maps.popitem(last=False)
            with contextlib.suppress(BufferError):
                oldest.data.close()
        return view
