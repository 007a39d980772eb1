"""The ``faststream`` relay: FastStream 0.7's NATS broker, a handler typed with ``Hop``, a msgpack codec.

Imported only by that variant (FastStream costs import time and memory). No ``from __future__ import annotations``
here: FastDepends reads the handler's annotations at run time and must see real types.
"""

import argparse
from typing import Any

import msgspec
from fast_depends.library.serializer import SerializerProto
from faststream import FastStream
from faststream.nats import NatsBroker, NatsMessage
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from opentelemetry.trace import SpanKind

from .common import PROPAGATOR, Hop, build_tracer_provider
from .relay import TRACER_NAME, announce_ready


class MsgpackCodec:
    """FastStream codec (``faststream._internal.parser.CodecProto``) with prebuilt msgspec msgpack coders."""

    def __init__(self, type_: type[Any]) -> None:
        self._decoder = msgspec.msgpack.Decoder(type_)
        self._encoder = msgspec.msgpack.Encoder()

    async def decode(self, msg: Any) -> Any:
        """Body bytes → struct; FastStream passes it to the handler's first parameter."""
        return self._decoder.decode(msg.body)

    async def encode(self, msg: Any, serializer: Any = None) -> tuple[bytes, str | None]:
        """Struct → body bytes, no content type (the other variants send none either)."""
        return (msg, None) if isinstance(msg, bytes) else (self._encoder.encode(msg), None)


def make_serializer(name: str) -> SerializerProto | None:
    """FastDepends serializer for handler arguments: ``none`` passes the codec's ``Hop`` through unvalidated."""
    if name == "msgspec":
        from fast_depends.msgspec import MsgSpecSerializer

        return MsgSpecSerializer()
    if name == "pydantic":
        from fast_depends.pydantic import PydanticSerializer

        return PydanticSerializer()
    return None


async def run_faststream(args: argparse.Namespace) -> None:
    """FastStream relay: ``@broker.subscriber`` typed with ``Hop``, publishing with a ``traceparent`` header."""
    provider = build_tracer_provider(args.sampler)
    middleware = args.fs_tracing == "middleware"
    serializer = make_serializer(args.fs_serializer)
    broker = NatsBroker(
        args.url,
        name=f"faststream {args.inp}",
        codec=MsgpackCodec(Hop),
        middlewares=[NatsTelemetryMiddleware(tracer_provider=provider)] if middleware else (),
        serializer=serializer,
        log_level=10,  # DEBUG: no per-message "Received"/"Processed" INFO lines
        graceful_timeout=5.0,
    )
    publisher = broker.publisher(args.out)
    tracer, span_name = provider.get_tracer(TRACER_NAME), f"{args.inp} process"
    subject: str = args.inp
    workers: int = args.fs_max_workers
    subscriber = (
        broker.subscriber(subject, queue=args.queue, max_workers=workers)
        if workers
        else broker.subscriber(subject, queue=args.queue)
    )

    async def traced_publish(hop: Hop, in_headers: dict[str, str]) -> None:
        ctx = PROPAGATOR.extract(in_headers)
        with tracer.start_as_current_span(span_name, context=ctx, kind=SpanKind.CONSUMER):
            headers: dict[str, str] = {}
            PROPAGATOR.inject(headers)
            await publisher.publish(hop, headers=headers)

    if middleware:

        @subscriber
        async def relay_mw(hop: Hop) -> None:
            await publisher.publish(hop)  # the middleware owns the spans and the traceparent header

    elif serializer is None:

        @subscriber
        async def relay_plain(hop: Hop) -> None:
            # without a serializer FastDepends injects no context parameters: read the message from the context
            await traced_publish(hop, broker.context.get_local("message").headers)

    else:

        @subscriber
        async def relay(hop: Hop, message: NatsMessage) -> None:
            await traced_publish(hop, message.headers)

    app = FastStream(broker, logger=None)
    app.after_startup(lambda: announce_ready(args))
    await app.run()  # installs its own SIGTERM/SIGINT handlers and stops the broker gracefully
