"""Load generators over NATS with the public protocol: an open loop (fixed arrival rate) and a closed loop.

Both publish ``infer_request`` bodies to ``natriton.v1.infer`` with a private reply subject per request
(``<inbox>.<n>``, one wildcard subscription for all of them), the deadline in ``Natriton-Timeout-Ms``, and
classify each reply by its ``type``/``code`` without decoding the result. A request with no reply within
``deadline + client_margin`` counts as ``client_timeout``.

Open loop, coordinated-omission safe: a timer thread releases each request at its scheduled instant
(``time.sleep`` is precise to ~0.1 ms, where event-loop timers on uvloop have 1 ms granularity and fire early);
sends never wait for replies, and latency is measured from the scheduled instant, so a generator or a host that
falls behind is charged to the latency, not hidden. The closed loop keeps ``concurrency`` requests in flight:
each reply (or timeout) sends the next one at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from natriton import headers as h
from natriton import subjects

from .payloads import BodyFactory
from .progress import Progress
from .recorder import CLIENT_TIMEOUT, FAR_FUTURE_NS, OK, Recorder


class ReplyHead(msgspec.Struct):
    """The fields of a reply that classify it; the result itself is skipped, not decoded."""

    type: str = ""
    code: str = ""
    cached: bool = False


_HEAD = msgspec.msgpack.Decoder(ReplyHead)


def classify(data: bytes) -> tuple[str, str]:
    """(outcome, tag) of a reply body: ``("ok", "hit"|"miss")``, ``(<error code>, "")`` or ``("bad_reply", "")``."""
    try:
        head = _HEAD.decode(data)
    except msgspec.MsgspecError:
        return "bad_reply", ""
    if head.type == "infer_response":
        return OK, "hit" if head.cached else "miss"
    if head.type == "error":
        return head.code or "error", ""
    return "bad_reply", ""


@dataclass(slots=True)
class Pending:
    """One request waiting for its reply."""

    scheduled_ns: int
    sent_ns: int
    expires_ns: int
    recorder: Recorder
    on_done: Callable[[], Awaitable[None]] | None


class MeshRequester:
    """Sends requests to the mesh on one NATS connection and routes every reply to its request's recorder."""

    def __init__(self, nc: NATS, subject: str = subjects.INFER, sweep_interval_s: float = 0.02) -> None:
        self.nc = nc
        self.subject = subject
        self.prefix = nc.new_inbox()
        self._cut = len(self.prefix) + 1
        self.pending: dict[str, Pending] = {}
        self.late_replies = 0
        self._seq = 0
        self._sweep_interval_s = sweep_interval_s
        self._sub: Any = None
        self._sweeper: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        """Subscribe to the reply inbox and start the timeout sweeper."""
        self._sub = await self.nc.subscribe(
            f"{self.prefix}.*", cb=self._on_reply, pending_msgs_limit=1_000_000, pending_bytes_limit=1 << 30
        )
        await self.nc.flush()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def close(self) -> None:
        """Stop the sweeper and unsubscribe (pending requests are dropped)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def send(
        self,
        body: bytes,
        headers: dict[str, str],
        scheduled_ns: int,
        timeout_ns: int,
        recorder: Recorder,
        on_done: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Publish one request; its reply (or timeout) is recorded against ``scheduled_ns``."""
        self._seq += 1
        token = str(self._seq)
        now = time.perf_counter_ns()
        self.pending[token] = Pending(scheduled_ns, now, now + timeout_ns, recorder, on_done)
        self._idle.clear()
        recorder.on_sent(scheduled_ns, now)
        await self.nc.publish(self.subject, body, reply=f"{self.prefix}.{token}", headers=headers)

    async def _on_reply(self, msg: Msg) -> None:
        now = time.perf_counter_ns()
        p = self.pending.pop(msg.subject[self._cut :], None)
        if p is None:
            self.late_replies += 1  # already counted as a client timeout
            return
        outcome, tag = classify(msg.data)
        p.recorder.on_done(outcome, p.scheduled_ns, p.sent_ns, now, tag)
        if not self.pending:
            self._idle.set()
        if p.on_done is not None:
            await p.on_done()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval_s)
            now = time.perf_counter_ns()
            expired = []
            for token, p in self.pending.items():  # insertion order = send order = expiry order
                if p.expires_ns > now:
                    break
                expired.append(token)
            for token in expired:
                p = self.pending.pop(token)
                p.recorder.on_done(CLIENT_TIMEOUT, p.scheduled_ns, p.sent_ns, now)
                if p.on_done is not None:
                    await p.on_done()
            if not self.pending:
                self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is pending (replies or timeouts); False if ``timeout_s`` passed first."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.pending:
                    self._idle.clear()
                    await self._idle.wait()
        except TimeoutError:
            return False
        return True


def request_headers(deadline_ms: int) -> dict[str, str]:
    """Headers of every load-test request: the deadline and the encoding."""
    return {h.TIMEOUT_MS: str(deadline_ms), h.CONTENT_TYPE: h.MSGPACK}


async def closed_loop(
    requester: MeshRequester,
    bodies: BodyFactory,
    *,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    deadline_ms: int,
    client_margin_s: float = 1.0,
    progress: Progress | None = None,
    label: str = "closed loop",
    at_window: Callable[[str], None] | None = None,
) -> Recorder:
    """Keep ``concurrency`` requests in flight; measure completions within ``duration_s`` after ``warmup_s``.

    ``at_window`` is called with ``"start"`` and ``"end"`` at the edges of the measurement window (CPU snapshots).
    """
    recorder = Recorder(window_start_ns=FAR_FUTURE_NS, window_on="done")
    headers = request_headers(deadline_ms)
    timeout_ns = int((deadline_ms / 1000 + client_margin_s) * 1e9)
    state = {"stopping": False, "i": 0}

    async def next_request() -> None:
        if state["stopping"]:
            return
        i = state["i"]
        state["i"] = i + 1
        body, _tag = bodies(i)
        await requester.send(body, headers, time.perf_counter_ns(), timeout_ns, recorder, next_request)

    async with (progress or Progress(enabled=False)).track(f"{label} x{concurrency}", recorder):
        for _ in range(concurrency):
            await next_request()
        await asyncio.sleep(warmup_s)
        if at_window is not None:
            at_window("start")
        recorder.window_start_ns = time.perf_counter_ns()
        await asyncio.sleep(duration_s)
        recorder.window_end_ns = time.perf_counter_ns()
        if at_window is not None:
            at_window("end")
        state["stopping"] = True
        await requester.wait_idle(deadline_ms / 1000 + client_margin_s + 1.0)
    return recorder


class _Releaser:
    """Timer thread: hands index ranges ``[i, j)`` of due requests to the event loop at their instants."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, offsets_ns: Sequence[int], t0_ns: int, release: Callable[[int, int], Any]
    ) -> None:
        self.loop = loop
        self.offsets = offsets_ns
        self.t0 = t0_ns
        self.release = release
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="open-loop-timer", daemon=True)

    def _run(self) -> None:
        i, n = 0, len(self.offsets)
        while i < n and not self.stop.is_set():
            now = time.perf_counter_ns() - self.t0
            j = i
            while j < n and self.offsets[j] <= now:
                j += 1
            if j > i:
                try:
                    self.loop.call_soon_threadsafe(self.release, i, j)
                except RuntimeError:  # the loop closed under us
                    return
                i = j
                continue
            time.sleep(min(0.05, (self.offsets[i] - now) / 1e9))


async def open_loop(
    requester: MeshRequester,
    bodies: BodyFactory,
    offsets_ns: Sequence[int],
    recorders: Sequence[Recorder],
    recorder_of: Sequence[int],
    *,
    deadline_ms: int,
    client_margin_s: float = 1.0,
    t0_ns: int | None = None,
    progress: Progress | None = None,
    label: str = "open loop",
    offered: float | None = None,
) -> int:
    """Send request ``k`` at ``t0 + offsets_ns[k]`` into ``recorders[recorder_of[k]]``; wait for every outcome.

    Returns ``t0_ns``. Recorders should use ``window_on="scheduled"`` (their windows are in absolute
    ``perf_counter_ns`` time: add ``t0_ns``); the progress line sums them.
    """
    loop = asyncio.get_running_loop()
    headers = request_headers(deadline_ms)
    timeout_ns = int((deadline_ms / 1000 + client_margin_s) * 1e9)
    t0 = t0_ns if t0_ns is not None else time.perf_counter_ns() + 20_000_000
    finished = asyncio.Event()
    sends: set[asyncio.Task[None]] = set()
    released = {"n": 0}
    total = len(offsets_ns)

    async def send_range(i: int, j: int) -> None:
        for k in range(i, j):
            body, _tag = bodies(k)
            await requester.send(body, headers, t0 + offsets_ns[k], timeout_ns, recorders[recorder_of[k]])

    def release(i: int, j: int) -> None:
        task = loop.create_task(send_range(i, j))
        sends.add(task)
        task.add_done_callback(sends.discard)
        released["n"] = j
        if j >= total:
            finished.set()

    releaser = _Releaser(loop, offsets_ns, t0, release)
    async with (progress or Progress(enabled=False)).track(label, recorders, offered):
        releaser.thread.start()
        try:
            if total:
                await finished.wait()
            while sends:
                await asyncio.gather(*list(sends))
            await requester.wait_idle(deadline_ms / 1000 + client_margin_s + 1.0)
        finally:
            releaser.stop.set()
            releaser.thread.join(timeout=1.0)
    return t0
