"""The router's shared-memory regions for Triton: sizing, placement, lending, re-registration after a Triton restart
(against a recording stand-in for Triton's registration calls; the real server is in test_router.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from natriton_router.shared_memory import (
    MAX_REGIONS,
    MIN_REGION_BYTES,
    SharedMemoryPool,
    aligned,
    batch_bytes,
    can_share,
    region_bytes,
)


class Registrar:
    """Records registrations; refuses them all when ``refuse``."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.registered: dict[str, tuple[str, int]] = {}
        self.calls: list[str] = []

    async def register_system_shared_memory(self, name: str, key: str, byte_size: int) -> Any:
        self.calls.append(f"register {name}")
        if self.refuse:
            raise RuntimeError("Unable to open shared memory region")
        self.registered[name] = (key, byte_size)

    async def unregister_system_shared_memory(self, name: str = "") -> Any:
        self.calls.append(f"unregister {name}")
        self.registered.pop(name, None)


def test_sizes() -> None:
    assert aligned(1) == 64 and aligned(64) == 64 and aligned(65) == 128
    assert region_bytes(10) == MIN_REGION_BYTES
    assert region_bytes(5 * 150_528) == 1 << 20 and region_bytes(8 * 150_528) == 2 << 20
    assert batch_bytes([np.zeros(100, np.uint8), np.zeros(3, np.float32)]) == 128 + 64
    assert can_share([np.zeros(3, np.uint8)]) and not can_share([np.array([b"x"], dtype=np.object_)])


async def test_a_batch_is_copied_in_and_each_input_named_by_offset() -> None:
    triton = Registrar()
    pool = SharedMemoryPool(triton, "router-1")
    try:
        images, ids = np.arange(2 * 5 * 3, dtype=np.uint8).reshape(2, 5, 3), np.array([[7], [9]], dtype=np.int64)
        region = await pool.acquire(batch_bytes([images, ids]))
        assert region is not None and region.registered and triton.registered[region.name][0] == f"/{region.name}"
        placed = region.place([images, ids])
        assert placed == [(0, 30), (64, 16)]
        buf = region.memory.buf
        assert buf is not None
        assert np.array_equal(np.ndarray(images.shape, np.uint8, buffer=buf, offset=0), images)
        assert np.array_equal(np.ndarray(ids.shape, np.int64, buffer=buf, offset=64), ids)
        pool.release(region)
        again = await pool.acquire(100)
        assert again is region and triton.calls.count(f"register {region.name}") == 1  # registered once
        pool.release(again)
    finally:
        await pool.close()
    assert triton.registered == {}


async def test_regions_are_lent_one_batch_at_a_time_and_bounded() -> None:
    pool = SharedMemoryPool(Registrar(), "router-1")
    try:
        lent = [await pool.acquire(1000) for _ in range(MAX_REGIONS)]
        assert all(r is not None for r in lent) and len({r.name for r in lent if r}) == MAX_REGIONS
        assert await pool.acquire(1000) is None  # every region busy: this batch goes over gRPC
        assert pool.fallbacks == 1 and pool.batches == MAX_REGIONS
        small = lent[0]
        assert small is not None
        pool.release(small)
        big = await pool.acquire(3 * MIN_REGION_BYTES)  # the free region is too small: it is replaced
        assert big is not None and big.size == 4 * MIN_REGION_BYTES and big.name != small.name
        assert pool.stats()["regions"] == MAX_REGIONS
    finally:
        await pool.close()


async def test_after_a_triton_restart_each_region_is_registered_again() -> None:
    triton = Registrar()
    pool = SharedMemoryPool(triton, "router-1")
    try:
        region = await pool.acquire(10)
        assert region is not None
        pool.release(region)
        triton.registered.clear()  # Triton restarted
        pool.forget_registrations()
        again = await pool.acquire(10)
        assert again is region and region.name in triton.registered and pool.reregistered == 1
        pool.release(again)
    finally:
        await pool.close()


@pytest.mark.parametrize("refuse", [True, False])
async def test_the_probe_says_whether_triton_can_map_our_regions(refuse: bool) -> None:
    triton = Registrar(refuse=refuse)
    pool = SharedMemoryPool(triton, "router/1 x")
    assert await pool.probe() is not refuse
    assert triton.registered == {}  # the probe region is gone either way
    assert all(" " not in call.split(" ", 1)[1] and "/" not in call.split(" ", 1)[1] for call in triton.calls)
