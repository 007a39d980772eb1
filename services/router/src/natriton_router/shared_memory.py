"""Batches to Triton through system shared memory when the router and Triton share a host (and IPC namespace).

Sent over gRPC, a batch of N 150 KB images is copied into a protobuf message, framed by HTTP/2, written to a
socket and read back by Triton. Through shared memory, the router copies the batch once into a region that Triton
has mapped, and the gRPC request carries only the region's name, offset and size. Measured on the 2-core host
with mobilenet_v2 and batches of 8: the router's CPU per batch fell from ~3.2 ms to ~1.5 ms
(``docs/decisions/0009-triton-shared-memory.md``).

How it is used (``NATRITON_TRITON_SHARED_MEMORY``, default ``auto``):
- At start the router creates a small probe region and asks Triton to register it. Triton can do that only if it
  can open the same ``/dev/shm`` object: same host and IPC namespace (one pod; or compose services with a shared
  ``ipc``). Otherwise, or when the gRPC URL balances over several replicas (a region is registered with one server
  only), batches go over gRPC as before.
- Regions are made on demand, one per batch in flight, sized to a power of two, at most :data:`MAX_REGIONS` per
  router (more batches at once go over gRPC), named ``natriton-<instance>-<pid>-<n>``, and registered once.
- Triton forgets registrations when it restarts. A call that fails because a region is unknown marks every region
  unregistered; the caller sends that batch over gRPC, and the next use of each region registers it again.
- On stop the regions are unregistered and unlinked. A router killed with SIGKILL leaves its regions registered in
  Triton (mapped, up to MAX_REGIONS x the largest batch) until Triton restarts or they are unregistered
  (``POST /v2/systemsharedmemory/region/<name>/unregister`` on Triton's HTTP port); the ``/dev/shm`` files
  themselves are unlinked by Python's resource tracker when the process dies.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from typing import Any, Final, Protocol

import numpy as np

log = logging.getLogger(__name__)

MAX_REGIONS: Final = 8
"""Regions one router keeps at most (one per batch in flight)."""
MIN_REGION_BYTES: Final = 1 << 20
ALIGN: Final = 64
"""Each input of a batch starts at a multiple of this many bytes in its region."""


class Registrar(Protocol):
    """What the pool needs from Triton's gRPC client."""

    async def register_system_shared_memory(self, name: str, key: str, byte_size: int) -> Any: ...

    async def unregister_system_shared_memory(self, name: str = "") -> Any: ...


@dataclass(slots=True)
class Region:
    """One shared-memory region: its Triton name, its ``/dev/shm`` key and its mapping."""

    name: str
    key: str
    memory: shared_memory.SharedMemory
    registered: bool = False
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = self.memory.size

    def place(self, arrays: list[np.ndarray[Any, Any]]) -> list[tuple[int, int]]:
        """Copy ``arrays`` into the region one after the other; their (offset, byte size) in it."""
        placed, offset = [], 0
        for array in arrays:
            view: np.ndarray[Any, Any] = np.ndarray(array.shape, array.dtype, buffer=self.memory.buf, offset=offset)
            view[...] = array
            placed.append((offset, array.nbytes))
            offset += aligned(array.nbytes)
        return placed


def aligned(n: int) -> int:
    """``n`` rounded up to :data:`ALIGN`."""
    return -(-n // ALIGN) * ALIGN


def region_bytes(needed: int) -> int:
    """The size of a new region for a batch of ``needed`` bytes: the next power of two, at least 1 MiB."""
    return max(MIN_REGION_BYTES, 1 << max(0, needed - 1).bit_length())


def batch_bytes(arrays: list[np.ndarray[Any, Any]]) -> int:
    """Bytes a batch takes in a region (each input aligned)."""
    return sum(aligned(a.nbytes) for a in arrays)


def can_share(arrays: list[np.ndarray[Any, Any]]) -> bool:
    """Whether a batch can go through shared memory (fixed-size types only; strings go over gRPC)."""
    return all(a.dtype != np.object_ for a in arrays)


class SharedMemoryPool:
    """Regions registered with one Triton, lent to one batch at a time."""

    def __init__(self, triton: Registrar, owner: str) -> None:
        self._triton = triton
        self._prefix = f"natriton-{_safe(owner)}-{os.getpid()}"
        self._free: list[Region] = []
        self._all: list[Region] = []
        self._made = 0
        self._retired: list[str] = []
        """Regions dropped (too small for the batches that came), still to be unregistered in Triton."""
        self.batches = 0
        """Batches sent through shared memory."""
        self.fallbacks = 0
        """Batches that went over gRPC because no region was free or usable."""
        self.reregistered = 0
        """Times the regions had to be registered again (Triton restarted)."""

    async def probe(self) -> bool:
        """Whether Triton can map a region this process makes (same host and IPC namespace)."""
        region = self._make(MIN_REGION_BYTES // 16, f"{self._prefix}-probe")
        try:
            await self._triton.register_system_shared_memory(region.name, region.key, region.size)
        except Exception as exc:  # Triton cannot open it: another host or IPC namespace
            log.info("Triton cannot map this router's shared memory (%s): batches go over gRPC", exc)
            return False
        finally:
            with contextlib.suppress(Exception):
                await self._triton.unregister_system_shared_memory(region.name)
            _release(region.memory)
        return True

    async def acquire(self, needed: int) -> Region | None:
        """A registered region of at least ``needed`` bytes for one batch; None when none can be had."""
        region = self._take(needed)
        if region is None:
            self.fallbacks += 1
            return None
        if not region.registered:
            await self._unregister_retired()
            try:
                await self._triton.register_system_shared_memory(region.name, region.key, region.size)
            except Exception as exc:
                log.warning("could not register shared-memory region %s with Triton: %s", region.name, exc)
                self._free.append(region)
                self.fallbacks += 1
                return None
            region.registered = True
        self.batches += 1
        return region

    def release(self, region: Region) -> None:
        """The batch that used ``region`` is done."""
        self._free.append(region)

    def forget_registrations(self) -> None:
        """Triton does not know our regions any more (it restarted): register each again on its next use."""
        self.reregistered += 1
        for region in self._all:
            region.registered = False

    async def close(self) -> None:
        """Unregister and unlink every region."""
        for region in self._all:
            if region.registered:
                with contextlib.suppress(Exception):
                    await self._triton.unregister_system_shared_memory(region.name)
            _release(region.memory)
        self._all.clear()
        self._free.clear()

    def stats(self) -> dict[str, int]:
        """Numbers for ``$SRV.STATS`` and metrics."""
        return {
            "regions": len(self._all),
            "region_bytes": sum(r.size for r in self._all),
            "batches": self.batches,
            "fallbacks": self.fallbacks,
            "reregistered": self.reregistered,
        }

    def _take(self, needed: int) -> Region | None:
        fitting = [r for r in self._free if r.size >= needed]
        if fitting:
            region = min(fitting, key=lambda r: r.size)
            self._free.remove(region)
            return region
        if len(self._all) >= MAX_REGIONS:
            if not self._free:
                return None
            smallest = min(self._free, key=lambda r: r.size)  # too small for this batch: replace it
            self._free.remove(smallest)
            self._all.remove(smallest)
            self._retire(smallest)
        self._made += 1
        region = self._make(region_bytes(needed), f"{self._prefix}-{self._made}")
        self._all.append(region)
        return region

    def _retire(self, region: Region) -> None:
        self._retired.append(region.name)
        _release(region.memory)

    async def _unregister_retired(self) -> None:
        while self._retired:
            name = self._retired.pop()
            with contextlib.suppress(Exception):
                await self._triton.unregister_system_shared_memory(name)

    @staticmethod
    def _make(size: int, name: str) -> Region:
        memory = shared_memory.SharedMemory(name=name, create=True, size=size)
        return Region(name=name, key=f"/{name}", memory=memory)


def _release(memory: shared_memory.SharedMemory) -> None:
    with contextlib.suppress(Exception):
        memory.close()
    with contextlib.suppress(Exception):
        memory.unlink()


def _safe(text: str) -> str:
    """Characters allowed in a region name."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:40] or "router"
