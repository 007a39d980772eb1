"""One relay of the chain: receive a ``Hop`` on ``--in``, decode it, re-encode it, publish it on ``--out``.

Every variant does the same per-message work — msgpack decode with a prebuilt decoder, W3C ``traceparent``
extract, one span for the hop, ``traceparent`` inject, msgpack encode, publish — so the differences the benchmark
measures are those of the runtime around that work. The process touches ``--ready-file`` (or prints ``READY``)
once subscribed and drains on SIGTERM/SIGINT.

    python -m loadtests.runtime_choice.relay --variant thin --url nats://127.0.0.1:4222 \
        --in bench.hop1 --out bench.hop2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import nats
import uvloop
from opentelemetry.trace import SpanKind, Tracer

from .common import PROPAGATOR, QUEUE, Hop, build_tracer_provider

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

log = logging.getLogger("runtime_choice.relay")
TRACER_NAME = "natriton.loadtests.runtime_choice"
T = TypeVar("T")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of one relay process."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    p.add_argument("--url", required=True, help="NATS server URL")
    p.add_argument("--in", dest="inp", required=True, help="subject to consume (queue group)")
    p.add_argument("--out", required=True, help="subject to publish to")
    p.add_argument("--queue", default=QUEUE, help="queue group name")
    p.add_argument("--sampler", default="always_off", help="always_off | always_on | ratio:<float>")
    p.add_argument("--max-concurrency", type=int, default=256, help="thin: in-flight handler tasks per process")
    p.add_argument("--ready-file", help="touch this file once subscribed (default: print READY on stdout)")
    p.add_argument(
        "--fs-tracing",
        choices=("manual", "middleware"),
        default="manual",
        help="faststream: propagate/span by hand like the others, or with faststream's NatsTelemetryMiddleware",
    )
    p.add_argument(
        "--fs-serializer",
        choices=("none", "msgspec", "pydantic"),
        default="none",
        help="faststream: FastDepends serializer that validates the handler's arguments (none = pass-through)",
    )
    p.add_argument(
        "--fs-max-workers", type=int, default=0, help="faststream: concurrent handler calls (0 = one at a time)"
    )
    return p.parse_args(argv)


async def wait_for_stop() -> None:
    """Return once SIGTERM or SIGINT arrives."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def announce_ready(args: argparse.Namespace) -> None:
    """Tell the parent process (bench) that the subscription is live: touch ``--ready-file`` or print READY."""
    if args.ready_file:
        Path(args.ready_file).touch()
    else:
        sys.stdout.write("READY\n")
        sys.stdout.flush()


def make_tracer(sampler: str) -> Tracer:
    """A tracer from a private SDK provider (nothing global), sampler as configured."""
    return build_tracer_provider(sampler).get_tracer(TRACER_NAME)


# --------------------------------------------------------------------------------------------------------------
# raw: a plain nats-py callback subscriber; callbacks of one subscription run one after another.
# --------------------------------------------------------------------------------------------------------------
async def run_raw(args: argparse.Namespace) -> None:
    """Baseline: the per-message work inline in a nats-py subscription callback."""
    tracer = make_tracer(args.sampler)
    decoder, encoder = msgspec.msgpack.Decoder(Hop), msgspec.msgpack.Encoder()
    nc = await nats.connect(args.url, name=f"raw {args.inp}")
    out, span_name = args.out, f"{args.inp} process"

    async def on_msg(msg: Msg) -> None:
        hop = decoder.decode(msg.data)
        ctx = PROPAGATOR.extract(msg.headers or {})
        with tracer.start_as_current_span(span_name, context=ctx, kind=SpanKind.CONSUMER):
            headers: dict[str, str] = {}
            PROPAGATOR.inject(headers)
            await nc.publish(out, encoder.encode(hop), headers=headers)

    await nc.subscribe(args.inp, queue=args.queue, cb=on_msg)
    await nc.flush()
    announce_ready(args)
    await wait_for_stop()
    await nc.drain()


# --------------------------------------------------------------------------------------------------------------
# thin: the shape of our own runtime over nats-py.
# --------------------------------------------------------------------------------------------------------------
class ThinRuntime:
    """Typed handler runtime: one bounded asyncio task per message, one span per hop, graceful drain.

    The handler receives the decoded struct and returns the struct to publish (or ``None``); the runtime owns
    decoding, trace-context propagation, the span, encoding and publishing.
    """

    def __init__(self, nc: Client, tracer: Tracer, *, max_concurrency: int = 256) -> None:
        self._nc = nc
        self._tracer = tracer
        self._sem = asyncio.Semaphore(max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._subs: list[Any] = []
        self._encoder = msgspec.msgpack.Encoder()

    async def add_handler(
        self,
        subject: str,
        queue: str,
        type_: type[T],
        handler: Callable[[T], Awaitable[msgspec.Struct | None]],
        out: str,
    ) -> None:
        """Subscribe ``handler`` to ``subject`` in ``queue``; its result goes to ``out`` with trace context."""
        decoder = msgspec.msgpack.Decoder(type_)
        span_name, nc, tracer, encoder = f"{subject} process", self._nc, self._tracer, self._encoder

        async def process(msg: Msg) -> None:
            item = decoder.decode(msg.data)
            ctx = PROPAGATOR.extract(msg.headers or {})
            with tracer.start_as_current_span(span_name, context=ctx, kind=SpanKind.CONSUMER):
                result = await handler(item)
                if result is not None:
                    headers: dict[str, str] = {}
                    PROPAGATOR.inject(headers)
                    await nc.publish(out, encoder.encode(result), headers=headers)

        async def on_msg(msg: Msg) -> None:
            await self._sem.acquire()  # backpressure: nats-py stops reading this subscription while we wait
            task = asyncio.create_task(process(msg))
            self._tasks.add(task)
            task.add_done_callback(self._on_done)

        self._subs.append(await self._nc.subscribe(subject, queue=queue, cb=on_msg))

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._sem.release()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("handler failed", exc_info=exc)

    async def drain(self) -> None:
        """Stop taking messages, finish the ones in flight, flush and close the connection."""
        for sub in self._subs:
            await sub.drain()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._nc.drain()


async def run_thin(args: argparse.Namespace) -> None:
    """Thin runtime relay: the handler is the identity on ``Hop``."""
    nc = await nats.connect(args.url, name=f"thin {args.inp}")
    runtime = ThinRuntime(nc, make_tracer(args.sampler), max_concurrency=args.max_concurrency)

    async def relay(hop: Hop) -> Hop:
        return hop

    await runtime.add_handler(args.inp, args.queue, Hop, relay, args.out)
    await nc.flush()
    announce_ready(args)
    await wait_for_stop()
    await runtime.drain()


async def run_faststream(args: argparse.Namespace) -> None:
    """FastStream relay, in its own module: FastDepends must resolve real (not postponed) annotations."""
    from .relay_faststream import run_faststream as run

    await run(args)


async def run_natriton(args: argparse.Namespace) -> None:
    """Relay on the mesh's real runtime (``natriton.runtime.ServiceRuntime``): what the services run on."""
    import os

    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from natriton.runtime import Inbound, ServiceRuntime
    from natriton.settings import CommonSettings
    from natriton.telemetry import inject

    from .common import NoopExporter

    # the SDK reads the sampler from the standard variable, as it does in the services
    if args.sampler.startswith("ratio:"):
        os.environ["OTEL_TRACES_SAMPLER"], os.environ["OTEL_TRACES_SAMPLER_ARG"] = "traceidratio", args.sampler[6:]
    else:
        os.environ["OTEL_TRACES_SAMPLER"] = args.sampler
    settings = CommonSettings(nats_url=args.url, max_concurrency=args.max_concurrency, instance_id="bench")
    runtime = ServiceRuntime("bench-relay", "0.0.0", settings)
    # the same span processor as the other variants (the runtime's own span is the hop span)
    runtime.tracer_provider.add_span_processor(BatchSpanProcessor(NoopExporter()))
    await runtime.connect()
    decoder, encoder = msgspec.msgpack.Decoder(Hop), msgspec.msgpack.Encoder()

    async def relay(inbound: Inbound) -> None:
        headers: dict[str, str] = {}
        inject(headers)
        await runtime.publish(args.out, encoder.encode(decoder.decode(inbound.data)), headers)

    await runtime.add_endpoint("relay", args.inp, relay, queue_group=args.queue)
    await runtime.nc.flush()
    announce_ready(args)
    await runtime.wait_for_stop()
    await runtime.drain()


VARIANTS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, None]]] = {
    "raw": run_raw,
    "thin": run_thin,
    "faststream": run_faststream,
    "natriton": run_natriton,
}


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the chosen variant on uvloop until SIGTERM/SIGINT."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(VARIANTS[args.variant](args))


if __name__ == "__main__":
    main()
