"""Ingest's shared-memory hand-off to the router (decision 0011), on this host's real ``/dev/shm``: slots, the
generation check, the budget, the quarantine, and the decision whether every router copy shares the memory."""

from __future__ import annotations

import os
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from natriton.handoff import (
    HEADER_BYTES,
    MIN_SLOT_BYTES,
    READ_MARK_OFFSET,
    SHM_DIR,
    HandoffRef,
    Sender,
    SlotPool,
    SlotReader,
    StaleHandoffError,
    shm_domain,
)
from natriton_client.liveness import HeartbeatWatch, Liveness
from natriton_client.protocol import Heartbeat

DOMAIN = shm_domain()
pytestmark = pytest.mark.skipif(not DOMAIN, reason="this host has no /dev/shm")


@pytest.fixture
def pool() -> Iterator[SlotPool]:
    slots = SlotPool(f"natriton-test-{uuid.uuid4().hex[:10]}", DOMAIN, max_bytes=4 * MIN_SLOT_BYTES, quarantine_s=0.05)
    yield slots
    slots.close()


@pytest.fixture
def reader() -> Iterator[SlotReader]:
    router = SlotReader(DOMAIN)
    yield router
    router.close()


def test_the_domain_names_this_boot_and_dev_shm() -> None:
    boot, device, inode = DOMAIN.rsplit(":", 2)
    assert boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert (int(device), int(inode)) == (os.stat(SHM_DIR).st_dev, os.stat(SHM_DIR).st_ino)


def test_the_router_reads_each_input_as_written(pool: SlotPool, reader: SlotReader) -> None:
    image, mask = os.urandom(150_528), os.urandom(1000)
    taken = pool.take([image, mask])
    assert taken is not None
    assert taken.ref.sizes == (150_528, 1000) and taken.ref.domain == DOMAIN and taken.ref.generation == 1
    assert reader.read(taken.ref) == [image, mask]
    assert (pool.in_use, pool.handed, reader.read_count) == (1, 1, 1)


def test_a_slot_given_back_is_stale_for_the_router(pool: SlotPool, reader: SlotReader) -> None:
    taken = pool.take([b"x" * 100_000])
    assert taken is not None
    pool.give_back(taken)
    pool.give_back(taken)  # twice: no harm
    with pytest.raises(StaleHandoffError, match="given back"):
        reader.read(taken.ref)
    assert reader.stale == 1 and pool.in_use == 0


def test_a_slot_rests_before_it_is_taken_again_and_old_references_stay_stale(
    pool: SlotPool, reader: SlotReader
) -> None:
    first = pool.take([b"a" * 100_000])
    assert first is not None
    pool.give_back(first)
    second = pool.take([b"b" * 100_000])
    assert second is not None and second.slot is not first.slot  # the given-back one is resting
    time.sleep(0.06)
    third = pool.take([b"c" * 100_000])
    assert third is not None and third.slot is first.slot and third.ref.generation == first.ref.generation + 2
    with pytest.raises(StaleHandoffError):
        reader.read(first.ref)  # the same segment, another request's bytes now
    assert reader.read(third.ref) == [b"c" * 100_000]


def test_slots_come_in_powers_of_two_within_the_budget(pool: SlotPool) -> None:
    big = pool.take([b"\0" * (MIN_SLOT_BYTES + 1)])  # needs the next size up: 512 KiB
    assert big is not None and big.slot.capacity == 2 * MIN_SLOT_BYTES - HEADER_BYTES
    small = pool.take([b"\0" * 1000])
    assert small is not None and small.slot.capacity == MIN_SLOT_BYTES - HEADER_BYTES
    last = pool.take([b"\0" * 1000])
    assert last is not None and pool.bytes_held == 4 * MIN_SLOT_BYTES
    assert pool.take([b"\0" * 1000]) is None  # the budget is spent: the request goes inline
    assert pool.no_room == 1
    pool.give_back(small)
    time.sleep(0.06)
    assert pool.take([b"\0" * 1000]) is not None


def test_the_router_refuses_another_hosts_slot_and_a_gone_segment(pool: SlotPool, reader: SlotReader) -> None:
    taken = pool.take([b"x" * 1000])
    assert taken is not None
    elsewhere = HandoffRef(domain="another-boot:1:1", segment=taken.ref.segment, generation=1, sizes=(1000,))
    with pytest.raises(StaleHandoffError, match="another host"):
        reader.read(elsewhere)
    gone = HandoffRef(domain=DOMAIN, segment=f"natriton-test-gone-{uuid.uuid4().hex}", generation=1, sizes=(1,))
    with pytest.raises(StaleHandoffError, match="gone"):
        reader.read(gone)
    for bad in ("../etc", ".hidden", "a/b", "pulse-shm-12345", "sem.natriton-x"):  # only the mesh's own segments
        with pytest.raises(StaleHandoffError, match="not a hand-off segment"):
            reader.read(HandoffRef(domain=DOMAIN, segment=bad, generation=1, sizes=(1,)))
    too_long = HandoffRef(domain=DOMAIN, segment=taken.ref.segment, generation=1, sizes=(10 * MIN_SLOT_BYTES,))
    with pytest.raises(StaleHandoffError):
        reader.read(too_long)


def test_close_unlinks_every_segment(reader: SlotReader) -> None:
    pool = SlotPool(f"natriton-test-{uuid.uuid4().hex[:10]}", DOMAIN, max_bytes=4 * MIN_SLOT_BYTES)
    held = pool.take([b"x" * 10])
    assert held is not None and (SHM_DIR / held.ref.segment).exists()
    pool.close()
    assert not (SHM_DIR / held.ref.segment).exists()
    with pytest.raises(StaleHandoffError, match="gone"):
        reader.read(held.ref)


def test_a_lent_slot_is_taken_again_once_the_router_has_read_it(pool: SlotPool, reader: SlotReader) -> None:
    """Preprocess never sees the reply: the router's read mark gives its slot back."""
    far = time.monotonic() + 60
    first = pool.take([b"a" * 1000], expires_s=far)
    assert first is not None
    assert reader.read(first.ref) == [b"a" * 1000]
    second = pool.take([b"b" * 1000], expires_s=far)  # the read slot is given back now, and rests
    assert second is not None and second.slot is not first.slot and pool.in_use == 1
    with pytest.raises(StaleHandoffError):
        reader.read(first.ref)  # read once: the bytes are not the request's any more
    time.sleep(0.06)
    third = pool.take([b"c" * 1000], expires_s=far)
    assert third is not None and third.slot is first.slot


def test_a_lent_slot_nobody_read_is_taken_again_after_its_expiry(pool: SlotPool, reader: SlotReader) -> None:
    unread = pool.take([b"a" * 1000], expires_s=time.monotonic() + 0.05)
    assert unread is not None
    time.sleep(0.12)  # expired, then given back at the next take (and rested)
    pool.take([b"b" * 1000], expires_s=time.monotonic() + 60)
    time.sleep(0.06)
    again = pool.take([b"c" * 1000], expires_s=time.monotonic() + 60)
    assert again is not None and again.slot is unread.slot
    with pytest.raises(StaleHandoffError):
        reader.read(unread.ref)  # a router that comes too late gets nothing


def test_a_late_read_mark_frees_nothing(pool: SlotPool) -> None:
    """A read mark names the generation that was read: one left by a reader of an earlier request does not free the
    slot's next one."""
    old = pool.take([b"a" * 1000], expires_s=time.monotonic())  # expires at once
    assert old is not None
    pool.take([b"x" * 1000])  # gives the expired one back (resting)
    time.sleep(0.06)
    current = pool.take([b"b" * 1000], expires_s=time.monotonic() + 60)
    assert current is not None and current.slot is old.slot
    struct.pack_into("<Q", current.slot.view, READ_MARK_OFFSET, old.ref.generation)  # the late reader's mark
    pool.take([b"y" * 1000])
    assert current.slot in pool.lent and current.slot.generation == current.ref.generation


def test_a_sender_hands_off_large_inputs_only_while_the_routers_share_the_memory(pool: SlotPool) -> None:
    shared = [True]
    sender = Sender(lambda: shared[0], 64 * 1024, pool)
    assert sender.offer([b"\0" * 1000]) is None  # small: inline
    taken = sender.offer([b"\0" * 100_000])
    assert taken is not None
    sender.give_back(taken)
    shared[0] = False
    assert sender.offer([b"\0" * 100_000]) is None
    assert sender.stats()["inline_other_host"] == 1 and sender.stats()["handed"] == 1
    closed = Sender(lambda: True, 0)
    assert closed.offer([b"x"]) is None  # no pool before open()
    closed.open("test", "", 1 << 20)
    assert closed.pool is None  # hand-off off (no domain): still none


def beat(instance: str, domain: str, service: str = "router") -> Heartbeat:
    return Heartbeat(
        service=service, instance=instance, boot=instance, interval_ms=250, dead_after_ms=2000, shm_domain=domain
    )


def test_memory_is_shared_only_when_every_router_copy_says_so_after_the_watch_settles() -> None:
    watch = HeartbeatWatch("natriton.v1.internal.heartbeat.*", on_lost=lambda dead: None, settle_s=0.0)
    watch.liveness = Liveness(time.monotonic() - 1, settle_s=0.5)
    now = time.monotonic()
    assert not watch.shares_memory("router", DOMAIN)  # no router heard of
    watch.liveness.observe(beat("r1", DOMAIN), now)
    watch.liveness.observe(beat("p1", "", service="preprocess"), now)  # other services do not matter
    assert watch.shares_memory("router", DOMAIN)
    assert not watch.shares_memory("router", "")  # this copy has hand-off off
    watch.liveness.observe(beat("r2", "other-host:1:1"), now)
    assert not watch.shares_memory("router", DOMAIN)
    watch.liveness.observe(Heartbeat(service="router", instance="r2", boot="r2", interval_ms=250,
                                     dead_after_ms=2000, leaving=True), now)  # fmt: skip
    assert watch.shares_memory("router", DOMAIN)
    watch.liveness.observe(beat("r3", ""), now)  # hand-off off on that copy
    assert not watch.shares_memory("router", DOMAIN)
    unsettled = HeartbeatWatch("x", on_lost=lambda dead: None)
    unsettled.liveness = Liveness(time.monotonic(), settle_s=60)
    unsettled.liveness.observe(beat("r1", DOMAIN), now)
    assert not unsettled.shares_memory("router", DOMAIN)  # a copy elsewhere may not have spoken yet
