"""Tensors handed from ingest to the router through ``/dev/shm`` when they share a host (decision 0011).

Sent inline, a producer's 150 KB tensor crosses nats-server twice before the router calls Triton: producer →
ingest, then ingest → router. The second crossing costs a 150 KB publish in ingest (the command is built by
concatenation and written to a loopback socket, whose kernel work both ends bill to the sender), nats-server's
read and write, and the router's read and parse. When ingest and every router copy see the same ``/dev/shm``
(the same :func:`shm_domain`, which each copy puts in its heartbeats), ingest instead copies the tensor bytes into
one of its own shared-memory slots and sends the router a ~100 B reference (:class:`HandoffRef`); the router copies
them out, and everything after is as before.

Who owns what:

- **Ingest owns its slots** (:class:`SlotPool`): POSIX shared-memory segments named
  ``natriton-<boot>-<n>``, one per slot, sized to a power of two (at least 256 KiB), made on demand up to a byte
  budget. A slot is taken for one request and given back when ingest has that request's one reply (or gave up on
  it) — ingest owns the reply (decision 0003), so no release message is needed. A slot given back rests
  :data:`QUARANTINE_S` before it is used again. Its segments are unlinked on stop, and by Python's resource tracker
  when the process dies (even by SIGKILL).
- **The generation check.** Each slot starts with a 64-byte header holding a generation number; taking a slot
  raises it, giving it back raises it again. The reference carries the generation it was written with, and the
  router (:class:`SlotReader`) reads the generation before and after copying: if either differs, ingest has given
  the slot back meanwhile (the request was answered or gave up), so the copy is refused as stale and nothing
  unrelated is ever inferred.
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from pathlib import Path
from typing import Final

import msgspec

log = logging.getLogger(__name__)

HEADER_BYTES: Final = 64
"""The slot's header: its generation (u64, little-endian) and padding; data starts after it."""
MIN_SLOT_BYTES: Final = 256 * 1024
QUARANTINE_S: Final = 0.25
"""How long a slot given back rests before it is taken again (a reader still copying from it has long finished)."""
SHM_DIR: Final = Path("/dev/shm")
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
    bytes_held: int = 0
    made: int = 0
    in_use: int = 0
    handed: int = 0
    """Requests handed off through the pool."""
    no_room: int = 0
    """Requests sent inline because no slot was free within the budget."""

    def take(self, buffers: Sequence[bytes]) -> Taken | None:
        """Copy ``buffers`` (a request's inputs, in order) into a free slot; None when none fits the budget."""
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
        ref = HandoffRef(
            domain=self.domain, segment=slot.name, generation=slot.generation, sizes=tuple(len(b) for b in buffers)
        )
        return Taken(slot, ref)

    def give_back(self, taken: Taken) -> None:
        """The request is answered (or given up): the slot's bytes are stale from now on."""
        slot = taken.slot
        if slot.generation != taken.ref.generation:
            return  # given back already
        slot.generation += 1
        _GENERATION.pack_into(slot.view, 0, slot.generation)
        slot.free_since = time.monotonic()
        self.in_use -= 1
        self.free.setdefault(slot.capacity, deque()).append(slot)

    def close(self) -> None:
        """Unlink every segment (those still in use too: their readers then fail as stale)."""
        for slot in self.slots:
            _release(slot.memory)
        self.slots.clear()
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


def _release(memory: shared_memory.SharedMemory) -> None:
    with contextlib.suppress(OSError, BufferError):
        memory.close()
    with contextlib.suppress(OSError):
        memory.unlink()


class SlotReader:
    """The router's side: copies a request's inputs out of ingest's slot, checking the generation around the copy.

    Segments are opened read-only by path (not through ``SharedMemory``, whose resource tracker would unlink another
    process's segment when this one exits) and kept mapped, the most recent :attr:`max_open`.
    """

    def __init__(self, domain: str, *, max_open: int = 256) -> None:
        self.domain = domain
        self.max_open = max_open
        self._maps: OrderedDict[str, mmap.mmap] = OrderedDict()
        self.read_count = 0
        self.stale = 0

    def read(self, ref: HandoffRef) -> list[bytes]:
        """Input i's bytes for each ``ref.sizes[i]``; :class:`StaleHandoffError` when the slot is not this
        request's any more, or cannot be opened from here."""
        if not self.domain or ref.domain != self.domain:
            self.stale += 1
            raise StaleHandoffError("the tensor was handed off in shared memory on another host")
        view = self._map(ref.segment)
        end = HEADER_BYTES + sum(ref.sizes)
        if end > len(view) or _GENERATION.unpack_from(view, 0)[0] != ref.generation:
            self.stale += 1
            raise StaleHandoffError("the hand-off slot was given back before the router read it")
        parts: list[bytes] = []
        offset = HEADER_BYTES
        for size in ref.sizes:
            parts.append(view[offset : offset + size])
            offset += size
        if _GENERATION.unpack_from(view, 0)[0] != ref.generation:
            self.stale += 1
            raise StaleHandoffError("the hand-off slot was given back while the router read it")
        self.read_count += 1
        return parts

    def close(self) -> None:
        for view in self._maps.values():
            with contextlib.suppress(BufferError):
                view.close()
        self._maps.clear()

    def _map(self, segment: str) -> mmap.mmap:
        view = self._maps.get(segment)
        if view is not None:
            self._maps.move_to_end(segment)
            return view
        if "/" in segment or segment.startswith("."):
            raise StaleHandoffError(f"not a hand-off segment: {segment[:64]!r}")
        try:
            fd = os.open(SHM_DIR / segment, os.O_RDONLY)
        except OSError as exc:
            self.stale += 1
            raise StaleHandoffError(f"hand-off segment {segment!r} is gone ({exc.strerror})") from exc
        try:
            view = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
        finally:
            os.close(fd)
        self._maps[segment] = view
        while len(self._maps) > self.max_open:
            _, oldest = self._maps.popitem(last=False)
            with contextlib.suppress(BufferError):
                oldest.close()
        return view
