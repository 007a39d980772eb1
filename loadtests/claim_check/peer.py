"""The two processes of the claim-check benchmark.

- **producer**: answers ``cc.ctl.run`` (a ``RunSpec``): keeps ``inflight`` payloads in flight in a closed loop —
  store, publish a ``Ref`` on ``cc.ref``, and store the next one when the consumer's ``Ack`` comes back. After the
  warm-up it reads the CPU time of the processes it is given, measures, reads them again, stops, waits for every
  ack, purges what it stored (outside the window) and replies a ``RunResult``.
- **consumer**: subscribes to ``cc.ref`` (core NATS); each reference is fetched in its own task (as the services
  handle messages) and answered with an ``Ack`` on ``cc.ack`` carrying the instant it had the bytes.

    python -m loadtests.claim_check.peer --role producer|consumer --nats URL --redis URL --workdir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import msgspec
import uvloop

from loadtests.harness.stack import cpu_seconds

from .stores import ACK_SUBJECT, CTL_RUN, REF_SUBJECT, Ack, Clients, Ref, RunResult, RunSpec, fetch, purge, put

_tasks: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any]) -> None:
    """Run ``coro`` as a task that is kept referenced until it ends."""
    task = asyncio.get_running_loop().create_task(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


class Producer:
    """The closed loop (one slice at a time)."""

    def __init__(self, c: Clients, payloads: dict[str, bytes]) -> None:
        self.c, self.payloads = c, payloads
        self.ids = itertools.count(1)
        self.enc, self.ack_dec = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(Ack)
        self.pending: dict[int, int] = {}  # published, not yet acknowledged
        self.active = 0  # loop iterations started (storing or published) and not yet acknowledged
        self.spec: RunSpec | None = None
        self.measuring = self.stopping = False
        self.latencies: list[int] = []
        self.errors, self.error_sample = 0, ""
        self.drained = asyncio.Event()

    async def one(self) -> None:
        """Store one payload and publish its reference."""
        spec = self.spec
        assert spec is not None
        ident = next(self.ids)
        self.active += 1
        t0 = time.monotonic_ns()
        try:
            ref = await put(self.c, spec.variant, ident, self.payloads[spec.payload], spec.ttl_s)
        except Exception as exc:
            self.errors += 1
            self.error_sample = self.error_sample or f"put: {exc!r}"[:300]
            await asyncio.sleep(0.01)
            self._next()
            return
        ref.t0 = t0
        self.pending[ident] = t0
        await self.c.nc.publish(REF_SUBJECT, self.enc.encode(ref))

    async def on_ack(self, msg: Any) -> None:
        """A consumer has the bytes: record, then keep the loop full."""
        ack = self.ack_dec.decode(msg.data)
        if self.pending.pop(ack.id, None) is None:
            return
        if ack.error:
            self.errors += 1
            self.error_sample = self.error_sample or f"fetch: {ack.error}"[:300]
        elif self.measuring:
            self.latencies.append(ack.t1 - ack.t0)
        self._next()

    def _next(self) -> None:
        """One iteration ended: start the next, or signal the drain when it was the last."""
        self.active -= 1
        if not self.stopping:
            spawn(self.one())
        elif self.active == 0:
            self.drained.set()

    async def run(self, spec: RunSpec) -> RunResult:
        """One slice: warm-up, measured window, drain, purge."""
        self.spec, self.latencies, self.errors, self.error_sample = spec, [], 0, ""
        self.measuring = self.stopping = False
        self.drained.clear()
        for _ in range(spec.inflight):
            spawn(self.one())
        await asyncio.sleep(spec.warmup_s)
        cpu0, t0 = [cpu_seconds(p) for p in spec.pids], time.perf_counter()
        self.measuring = True
        await asyncio.sleep(spec.duration_s)
        self.measuring = False
        t1, cpu1 = time.perf_counter(), [cpu_seconds(p) for p in spec.pids]
        self.stopping = True
        if self.active:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drained.wait(), timeout=15.0)
        lost, self.active = self.active, 0
        self.pending.clear()
        await purge(self.c, spec.variant)
        return RunResult(
            completions=len(self.latencies),
            window_s=t1 - t0,
            latencies_ns=self.latencies,
            cpu_s=[b - a for a, b in zip(cpu0, cpu1, strict=True)],
            errors=self.errors,
            error_sample=self.error_sample,
            lost=lost,
        )


def mark_ready(path: Path) -> None:
    """Tell the orchestrator this peer is subscribed."""
    path.write_text("ready")


def load_payloads(payload_dir: Path) -> dict[str, bytes]:
    """``<name>.bin`` files → {name: bytes}."""
    return {p.stem: p.read_bytes() for p in payload_dir.glob("*.bin")}


async def producer(c: Clients, payloads: dict[str, bytes], ready: Path) -> None:
    """Serve ``cc.ctl.run`` until terminated."""
    prod = Producer(c, payloads)
    spec_dec, enc = msgspec.msgpack.Decoder(RunSpec), msgspec.msgpack.Encoder()

    async def on_run(msg: Any) -> None:
        result = await prod.run(spec_dec.decode(msg.data))
        await msg.respond(enc.encode(result))

    async def on_ctl(msg: Any) -> None:
        spawn(on_run(msg))  # the run lasts seconds: keep the control subscription free

    await c.nc.subscribe(ACK_SUBJECT, cb=prod.on_ack)
    await c.nc.subscribe(CTL_RUN, cb=on_ctl)
    await c.nc.flush()
    mark_ready(ready)
    await asyncio.Event().wait()


async def consumer(c: Clients, ready: Path) -> None:
    """Fetch every reference in its own task and acknowledge it."""
    ref_dec, enc = msgspec.msgpack.Decoder(Ref), msgspec.msgpack.Encoder()

    async def handle(ref: Ref) -> None:
        error = ""
        try:
            arr = await fetch(c, ref)
            if arr.nbytes != ref.size:
                error = f"size {arr.nbytes} != {ref.size}"
        except Exception as exc:
            error = repr(exc)[:300]
        t1 = time.monotonic_ns()
        await c.nc.publish(ACK_SUBJECT, enc.encode(Ack(ref.id, ref.t0, t1, error)))

    async def on_ref(msg: Any) -> None:
        spawn(handle(ref_dec.decode(msg.data)))

    await c.nc.subscribe(REF_SUBJECT, cb=on_ref, pending_bytes_limit=256 * 1024 * 1024)
    await c.nc.flush()
    mark_ready(ready)
    await asyncio.Event().wait()


async def amain(args: argparse.Namespace) -> None:
    """Connect, then serve the role."""
    workdir, shm = Path(args.workdir), Path(args.shm_dir)
    payloads = load_payloads(workdir / "payloads") if args.role == "producer" else {}
    c = await Clients.connect(args.nats, args.redis, shm / "files", shm / "ring", args.ring_slots, args.ring_slot_size)
    ready = workdir / f"{args.role}.ready"
    if args.role == "producer":
        await producer(c, payloads, ready)
    else:
        await consumer(c, ready)


def main() -> None:
    """Command line of a peer."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=("producer", "consumer"), required=True)
    p.add_argument("--nats", required=True)
    p.add_argument("--redis", required=True)
    p.add_argument("--workdir", required=True, help="holds payloads/*.bin and the ready files")
    p.add_argument("--shm-dir", required=True, help="a directory in /dev/shm: files/ (one file per payload) and ring")
    p.add_argument("--ring-slots", type=int, default=64)
    p.add_argument("--ring-slot-size", type=int, required=True)
    args = p.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(amain(args))


if __name__ == "__main__":
    main()
