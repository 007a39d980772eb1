"""Batching on the wire: the messages one process publishes to the same internal subject in one event-loop turn
travel as one NATS message.

Why: the mesh's cost per request is mostly per message, not per byte, for small messages (a publish, a flush and a
``write`` in the sender; routing in nats-server; a read, a parse and a dispatch in the receiver). When the router gets
a batch of N results back from Triton, the N waiting handlers wake up in the same turn and each publishes its
postprocess task; postprocess answers them in the same turn too. Packing what is published in one turn makes N
messages cost about one, and adds no wait: the pack is sent at the end of the turn it was filled in (nothing is held
back for a batch to fill). A turn with one message sends it exactly as an unbatched publish would.

Wire form (internal subjects only; producers never see it): header ``Natriton-Batch: <n>`` and a msgpack array of
``n`` items ``[headers, body]`` — each item is the message that would have been published alone, with its own
headers (envelope, trace context). Receivers (:meth:`natriton.runtime._Endpoint.dispatch`, ingest's reply
subscription) unpack and handle each item as if it had arrived alone. A pack never exceeds the server's
``max_payload`` nor :data:`MAX_PACK_BYTES`: an item that would make it bigger starts the next pack.

Decision and measurements: ``docs/decisions/0008-batch-on-the-wire.md``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final

import msgspec

log = logging.getLogger(__name__)

BATCH_HEADER: Final = "Natriton-Batch"
"""Header of a packed message: the number of items in its body."""
MAX_PACK_BYTES: Final = 1024 * 1024
"""A pack stays under this even when the server allows more: packing saves per message, not per byte, so large
items gain little from it, and one huge pack would hand a burst of work to a single copy of the receiver."""
ITEM_OVERHEAD: Final = 64
"""Bytes allowed per item for msgpack framing, on top of its headers and body."""


class Item(msgspec.Struct, array_like=True, frozen=True):
    """One packed message: its headers and body."""

    headers: dict[str, str]
    data: bytes


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(list[Item])


def pack(items: list[Item]) -> bytes:
    """The body of a packed message."""
    return _ENCODER.encode(items)


def unpack(data: bytes) -> list[Item]:
    """The items of a packed message body (``msgspec.MsgspecError`` when it is not one)."""
    return _DECODER.decode(data)


def is_packed(headers: dict[str, str] | None) -> bool:
    """Whether a message with these headers is a pack of several."""
    return headers is not None and BATCH_HEADER in headers


def item_size(headers: dict[str, str], data: bytes) -> int:
    """An upper bound of what one item adds to a pack."""
    return len(data) + sum(len(k) + len(v) + 8 for k, v in headers.items()) + ITEM_OVERHEAD


Publish = Callable[[str, bytes, "dict[str, str] | None"], Coroutine[Any, Any, None]]


class Outbox:
    """Collects the messages of one event-loop turn per subject and sends each subject's as one (or a few) packs.

    ``send`` publishes one NATS message; ``spawn`` runs the coroutine that sends a turn's messages (the runtime's
    task set, so a drain waits for it); ``max_bytes`` bounds one pack (the server's ``max_payload``, at most
    :data:`MAX_PACK_BYTES`).
    """

    def __init__(
        self, send: Publish, spawn: Callable[[Coroutine[Any, Any, None]], object], max_bytes: Callable[[], int]
    ) -> None:
        self._send = send
        self._spawn = spawn
        self._max_bytes = max_bytes
        self._waiting: dict[str, list[Item]] = {}
        self._scheduled = False
        self.packs = 0
        """Packed messages sent (each carried 2 or more items)."""
        self.packed_items = 0
        """Items that travelled in packs."""
        self.singles = 0
        """Messages sent alone (the only one for their subject in their turn)."""

    def put(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        """Send at the end of this turn, packed with the turn's other messages for ``subject``."""
        if not self._scheduled:
            asyncio.get_running_loop().call_soon(self._end_of_turn)
            self._scheduled = True
        self._waiting.setdefault(subject, []).append(Item(headers, data))

    @property
    def waiting(self) -> int:
        """Messages not handed to the connection yet."""
        return sum(len(items) for items in self._waiting.values())

    def flush(self) -> None:
        """Hand what is waiting to the connection now, without waiting for the end of the turn (a drain does this
        before it closes the connection)."""
        if self._waiting:
            waiting, self._waiting = self._waiting, {}
            self._spawn(self._send_all(waiting))

    def _end_of_turn(self) -> None:
        self._scheduled = False
        self.flush()

    async def _send_all(self, waiting: dict[str, list[Item]]) -> None:
        limit = self._max_bytes()
        for subject, items in waiting.items():
            for group in split(items, limit):
                try:
                    if len(group) == 1:
                        self.singles += 1
                        await self._send(subject, group[0].data, group[0].headers)
                    else:
                        self.packs += 1
                        self.packed_items += len(group)
                        await self._send(subject, pack(group), {BATCH_HEADER: str(len(group))})
                except Exception:
                    log.exception("could not publish %d message(s) to %s", len(group), subject)


def split(items: list[Item], limit: int) -> list[list[Item]]:
    """Consecutive groups of ``items`` whose packs stay within ``limit`` bytes (an item too big for any pack goes
    alone; the server refuses it as it would have refused it unpacked)."""
    groups: list[list[Item]] = []
    current: list[Item] = []
    size = ITEM_OVERHEAD
    for item in items:
        n = item_size(item.headers, item.data)
        if current and size + n > limit:
            groups.append(current)
            current, size = [], ITEM_OVERHEAD
        current.append(item)
        size += n
    if current:
        groups.append(current)
    return groups
