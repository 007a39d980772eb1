"""Which copies of a service are alive, from their heartbeats (:class:`~natriton_client.protocol.Heartbeat`).

:class:`Liveness` is the pure bookkeeping (tested without NATS); :class:`HeartbeatWatch` feeds it from a NATS
subscription and reports copies that died: silent for their ``dead_after_ms``, or seen again with a new ``boot``
(restarted). A copy that says it is leaving (draining) is forgotten without being reported: it finishes its work.
When the last known copy of a service leaves, ``on_last_left`` hears of it: what was on its way to that service,
and not yet taken by the leaving copy, has nowhere to go.

The owner of requests (ingest for the pipeline, the client library for ingest) re-sends what a dead copy may
have held; see docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from natriton_client.protocol import Heartbeat

log = logging.getLogger(__name__)
_HEARTBEAT = msgspec.json.Decoder(Heartbeat)


@dataclass(slots=True)
class Peer:
    """One copy of a service as last heard of."""

    service: str
    instance: str
    boot: str
    last_seen_s: float
    """``time.monotonic()`` of its latest heartbeat."""
    dead_after_s: float
    up_s: float = 0.0
    """How long it had been beating at its latest heartbeat (``up_ms``)."""
    shm_domain: str = ""
    """The ``/dev/shm`` it sees ('' for none)."""


class Liveness:
    """Live copies per service, from heartbeats; ``now_s`` is ``time.monotonic()`` everywhere."""

    def __init__(self, now_s: float, *, settle_s: float = 2.0) -> None:
        self.watching_since_s = now_s
        self.settle_s = settle_s
        """How long to watch before "no copy of X" is believed (every live copy has spoken by then)."""
        self.peers: dict[tuple[str, str], Peer] = {}

    def observe(self, beat: Heartbeat, now_s: float) -> list[Peer]:
        """Take one heartbeat; returns the earlier life of this copy when it restarted (it died)."""
        key = (beat.service, beat.instance)
        known = self.peers.get(key)
        lost = [known] if known is not None and known.boot != beat.boot else []
        if beat.leaving:
            self.peers.pop(key, None)
        else:
            dead_after = max(beat.dead_after_ms, 1) / 1000
            self.peers[key] = Peer(
                beat.service, beat.instance, beat.boot, now_s, dead_after, beat.up_ms / 1000, beat.shm_domain
            )
        return lost

    def sweep(self, now_s: float) -> list[Peer]:
        """Forget and return the copies silent for longer than their ``dead_after``."""
        dead = [p for p in self.peers.values() if now_s - p.last_seen_s > p.dead_after_s]
        for peer in dead:
            del self.peers[(peer.service, peer.instance)]
        return dead

    def refresh(self, now_s: float) -> None:
        """Count every known copy as just heard (after our own connection was down: silence was ours)."""
        for peer in self.peers.values():
            peer.last_seen_s = now_s
        self.watching_since_s = min(self.watching_since_s, now_s)

    def heard_since(self, service: str, since_s: float) -> bool:
        """Whether a copy of ``service`` sent a heartbeat after ``since_s``."""
        return any(p.last_seen_s > since_s for (s, _), p in self.peers.items() if s == service)

    def instances(self, service: str, *, up_for_s: float = 0.0, now_s: float = 0.0) -> list[str]:
        """The live instances of ``service``; with ``up_for_s``, only those up (beating) at least that long."""
        return [
            p.instance
            for (s, _), p in self.peers.items()
            if s == service and p.up_s + max(0.0, now_s - p.last_seen_s) >= up_for_s
        ]

    def shm_domains(self, service: str) -> set[str]:
        """The ``/dev/shm`` domains of the live copies of ``service`` ('' for a copy that shares none)."""
        return {p.shm_domain for (s, _), p in self.peers.items() if s == service}

    def live(self, service: str) -> int:
        """Copies of ``service`` heard from within their ``dead_after``."""
        return sum(1 for s, _ in self.peers if s == service)

    def settled(self, now_s: float) -> bool:
        """Whether we have watched long enough to believe a count of 0."""
        return now_s - self.watching_since_s >= self.settle_s

    def none_alive(self, service: str, now_s: float) -> bool:
        """True only when we are sure no copy of ``service`` is alive."""
        return self.settled(now_s) and self.live(service) == 0


class HeartbeatWatch:
    """Subscribe to heartbeats on ``subject`` (wildcards allowed) and report dead copies to ``on_lost``.

    ``on_reconnected`` is called after the NATS connection came back (messages in flight then may be lost, as with a
    dead copy). Sweeps every ``sweep_s``; never while our own connection is down.
    """

    def __init__(
        self,
        subject: str,
        *,
        on_lost: Callable[[list[Peer]], None],
        on_reconnected: Callable[[], None] | None = None,
        on_last_left: Callable[[str], None] | None = None,
        settle_s: float = 2.0,
        sweep_s: float = 0.1,
    ) -> None:
        self.nc: NATS | None = None
        self.subject = subject
        self.on_lost = on_lost
        self.on_reconnected = on_reconnected
        self.on_last_left = on_last_left
        self.sweep_s = sweep_s
        self.liveness = Liveness(time.monotonic(), settle_s=settle_s)
        self.losses = 0
        """Copies found dead so far."""
        self._changed = asyncio.Event()
        self._beat = asyncio.Event()
        self._subscription: Subscription | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, nc: NATS) -> None:
        """Subscribe on ``nc`` and start sweeping."""
        self.nc = nc
        self.liveness = Liveness(time.monotonic(), settle_s=self.liveness.settle_s)
        self._subscription = await nc.subscribe(self.subject, cb=self._on_message)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever(nc))

    async def stop(self) -> None:
        """Stop sweeping and unsubscribe."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None

    async def next_loss(self) -> None:
        """Return at the next copy found dead (or reconnection of our own connection)."""
        await self._changed.wait()

    async def next_heartbeat(self) -> None:
        """Return at the next heartbeat of any copy."""
        await self._beat.wait()

    def none_alive(self, service: str) -> bool:
        """True only when we are sure no copy of ``service`` is alive."""
        return self.liveness.none_alive(service, time.monotonic())

    def shares_memory(self, service: str, domain: str) -> bool:
        """Whether every live copy of ``service`` sees the ``/dev/shm`` ``domain`` (and at least one is alive, and
        the watch has settled: a copy not heard yet might live elsewhere)."""
        if not domain or not self.liveness.settled(time.monotonic()):
            return False
        return self.liveness.shm_domains(service) == {domain}

    def live(self, service: str) -> int:
        """Copies of ``service`` alive now."""
        return self.liveness.live(service)

    async def _on_message(self, msg: Msg) -> None:
        try:
            beat = _HEARTBEAT.decode(msg.data)
        except (msgspec.MsgspecError, RecursionError):
            return  # not a heartbeat: ignore
        live_before = self.liveness.live(beat.service)
        lost = self.liveness.observe(beat, time.monotonic())
        if not beat.leaving:
            self._beat.set()
            self._beat = asyncio.Event()
        if lost:
            self._report(lost)
        if beat.leaving and live_before and not self.liveness.live(beat.service) and self.on_last_left is not None:
            log.warning("the last copy of %s is leaving", beat.service)
            on_last_left, service = self.on_last_left, beat.service
            self._call(lambda: on_last_left(service))

    async def _sweep_forever(self, nc: NATS) -> None:
        was_connected = True
        while True:
            await asyncio.sleep(self.sweep_s)
            now = time.monotonic()
            if not nc.is_connected:
                was_connected = False
                continue
            if not was_connected:
                was_connected = True
                self.liveness.refresh(now)
                self._wake()
                if self.on_reconnected is not None:
                    self._call(self.on_reconnected)
                continue
            dead = self.liveness.sweep(now)
            if dead:
                self._report(dead)

    def _report(self, dead: list[Peer]) -> None:
        self.losses += len(dead)
        for peer in dead:
            log.warning("%s copy %s (boot %s) is gone: no heartbeat", peer.service, peer.instance, peer.boot)
        self._wake()
        self._call(lambda: self.on_lost(dead))

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    @staticmethod
    def _call(callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            log.exception("heartbeat watch callback failed")
