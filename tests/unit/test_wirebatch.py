"""Batching on the wire: one turn's messages per subject become one pack; a lone message travels as before."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from natriton import wirebatch
from natriton.wirebatch import BATCH_HEADER, Item, Outbox, pack, split, unpack

Sent = list[tuple[str, bytes, dict[str, str] | None]]


def outbox(sent: Sent, max_bytes: int = 1 << 20) -> tuple[Outbox, set[asyncio.Task[None]]]:
    tasks: set[asyncio.Task[None]] = set()

    async def send(subject: str, data: bytes, headers: dict[str, str] | None) -> None:
        sent.append((subject, data, headers))

    def spawn(coroutine: Any) -> None:
        tasks.add(asyncio.get_running_loop().create_task(coroutine))

    return Outbox(send, spawn, lambda: max_bytes), tasks


async def drain(tasks: set[asyncio.Task[None]]) -> None:
    for _ in range(3):
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)


def test_a_pack_round_trips_every_item_with_its_own_headers() -> None:
    items = [Item({"Natriton-Mesh-Id": f"m{i}", "traceparent": f"t{i}"}, bytes([i]) * i) for i in range(5)]
    assert unpack(pack(items)) == items
    with pytest.raises(msgspec.MsgspecError):
        unpack(b"\x93not a pack")


async def test_one_turns_messages_to_a_subject_travel_as_one_pack() -> None:
    sent: Sent = []
    box, tasks = outbox(sent)
    for i in range(4):
        box.put("postprocess", f"r{i}".encode(), {"Natriton-Mesh-Id": f"m{i}"})
    box.put("replies.a", b"alone", {"Natriton-Mesh-Id": "x"})
    assert sent == []  # nothing leaves before the turn ends
    await drain(tasks)
    assert [(s, h) for s, _, h in sent] == [
        ("postprocess", {BATCH_HEADER: "4"}),
        ("replies.a", {"Natriton-Mesh-Id": "x"}),
    ]
    items = unpack(sent[0][1])
    assert [(i.headers["Natriton-Mesh-Id"], i.data) for i in items] == [(f"m{i}", f"r{i}".encode()) for i in range(4)]
    assert sent[1][1] == b"alone"  # a lone message is not packed: byte for byte what publish would send
    assert (box.packs, box.packed_items, box.singles) == (1, 4, 1)


async def test_each_turn_is_sent_at_its_end_without_waiting_for_more() -> None:
    sent: Sent = []
    box, tasks = outbox(sent)
    box.put("s", b"1", {})
    await drain(tasks)
    box.put("s", b"2", {})
    box.put("s", b"3", {})
    await drain(tasks)
    assert [h for _, _, h in sent] == [{}, {BATCH_HEADER: "2"}]


async def test_a_pack_never_exceeds_the_servers_max_payload() -> None:
    sent: Sent = []
    box, tasks = outbox(sent, max_bytes=1000)
    for i in range(7):
        box.put("s", bytes(300), {"k": str(i)})
    await drain(tasks)
    assert all(len(data) <= 1000 for _, data, _ in sent)
    received: list[str] = []
    for _, data, headers in sent:
        assert headers is not None
        received += [i.headers["k"] for i in unpack(data)] if headers and BATCH_HEADER in headers else [headers["k"]]
    assert len(sent) == 4
    assert received == [str(i) for i in range(7)]  # all of them, in order


def test_split_keeps_order_and_sends_an_oversized_item_alone() -> None:
    items = [Item({}, bytes(n)) for n in (100, 100, 5000, 100)]
    groups = split(items, 1000)
    assert [[len(i.data) for i in g] for g in groups] == [[100, 100], [5000], [100]]


def test_is_packed() -> None:
    assert wirebatch.is_packed({BATCH_HEADER: "2"})
    assert not wirebatch.is_packed({}) and not wirebatch.is_packed(None)


async def test_flush_hands_over_at_once_and_the_end_of_turn_then_finds_nothing() -> None:
    sent: Sent = []
    box, tasks = outbox(sent)
    box.put("s", b"1", {})
    box.put("s", b"2", {})
    assert box.waiting == 2
    box.flush()  # a drain, before it closes the connection
    assert box.waiting == 0
    await drain(tasks)
    assert [h for _, _, h in sent] == [{BATCH_HEADER: "2"}]
    box.put("s", b"3", {})
    await drain(tasks)
    assert [h for _, _, h in sent] == [{BATCH_HEADER: "2"}, {}]  # the next turn works as before
