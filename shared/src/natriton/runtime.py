"""The thin service runtime over nats-py that every Natriton service runs on.

What it gives a service (see docs/decisions/0001-service-runtime.md for why it is ours and not FastStream):
- one NATS connection with reconnect, optional credentials, a recognisable client name;
- endpoints in a queue group, each message handled in its own task, at most ``max_concurrency`` at once
  (further messages wait in the subscription, or are answered at once by ``on_overload``);
- one OpenTelemetry span per message (``CONSUMER``, messaging ``process`` attributes), the parent taken from the
  ``traceparent`` header, and a ``PRODUCER`` ``send`` span per traced publish when sampled;
- the request's ids (request, mesh) bound for log lines while its handler runs (see natriton.logs);
- typed errors: a handler raises :class:`~natriton.errors.MeshError` and its ``on_error`` replies;
- the NATS micro v1 protocol (``$SRV.PING``, ``$SRV.INFO``, ``$SRV.STATS``; plain, ``.<name>`` and
  ``.<name>.<id>``), answered by the runtime itself so that the numbers are truthful (see below);
- a graceful drain on SIGTERM: stop taking messages, finish what was accepted, flush, close.

Why not ``nats.micro.Service``: it times and counts the endpoint handler, and ours hands each message to a task and
returns at once, so its processing time and error counts would be wrong; it also keeps the endpoint subscriptions
private (and unsubscribes instead of draining them on stop). The runtime owns its subscriptions and answers the
three verbs with the same JSON (``io.nats.micro.v1.*_response``) that nats-py, nats.go and the ``nats micro`` CLI
read: ``num_requests`` counts messages taken, ``num_errors`` those answered with an error (failed or rejected),
``processing_time`` the handlers' own time, and ``data`` our per-endpoint counters plus the app's numbers (``app``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import nats
import nats.aio.client as nats_client
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError
from nats.nuid import NUID
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from natriton import headers as h
from natriton import wirebatch
from natriton.errors import ErrorCode, MeshError
from natriton.handoff import shm_domain
from natriton.logs import bind_request, unbind_request
from natriton.metrics import LatencyHistogram, MetricsSource, ReadinessCheck, RouteHandler, first_reason
from natriton.settings import CommonSettings
from natriton.subjects import heartbeat_subject
from natriton.telemetry import (
    TRACEPARENT,
    hop_span,
    mark_error,
    only_sampled_parents,
    process_attributes,
    send_span,
    setup_tracing,
    unsampled_child,
)
from natriton_client.protocol import Heartbeat

log = logging.getLogger(__name__)
_HEARTBEATS = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Inbound:
    """One received message, as a handler sees it."""

    subject: str
    data: bytes
    headers: dict[str, str]
    reply: str
    received_s: float = field(default_factory=time.monotonic)
    """When it was taken (``time.monotonic()``)."""


Handler = Callable[[Inbound], Awaitable[None]]
ErrorHandler = Callable[[Inbound, MeshError], Awaitable[None]]

# ------------------------------------------------------------------------------------------------ NATS micro v1
MICRO_PREFIX = "$SRV"
PING_RESPONSE_TYPE = "io.nats.micro.v1.ping_response"
INFO_RESPONSE_TYPE = "io.nats.micro.v1.info_response"
STATS_RESPONSE_TYPE = "io.nats.micro.v1.stats_response"
MICRO_VERBS = ("PING", "INFO", "STATS")
MICRO_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
"""What NATS micro allows in service and endpoint names."""
MICRO_VERSION = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
"""Semantic version (what NATS micro requires of a service version)."""


def micro_control_subjects(verb: str, name: str, service_id: str) -> tuple[str, str, str]:
    """Where one verb is asked: of every service, of every copy of ``name``, of this copy."""
    return (f"{MICRO_PREFIX}.{verb}", f"{MICRO_PREFIX}.{verb}.{name}", f"{MICRO_PREFIX}.{verb}.{name}.{service_id}")


def micro_time(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds (what Go's ``time.Time`` and nats-py's ``ServiceStats`` parse)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class MicroIdentity:
    """Who answers ``$SRV`` requests: the kind of service, this copy's id, its version and metadata."""

    name: str
    id: str
    version: str
    description: str
    metadata: Mapping[str, str]

    def __post_init__(self) -> None:
        if not MICRO_NAME.match(self.name):
            raise ValueError(f"service name {self.name!r} must match {MICRO_NAME.pattern}")
        if not MICRO_VERSION.match(self.version):
            raise ValueError(f"service version {self.version!r} must be a semantic version (1.2.3)")

    def response(self, response_type: str) -> dict[str, Any]:
        """The fields every response carries."""
        return {
            "type": response_type,
            "name": self.name,
            "id": self.id,
            "version": self.version,
            "metadata": dict(self.metadata),
        }


def endpoint_info(name: str, subject: str, queue_group: str) -> dict[str, Any]:
    """One endpoint in ``$SRV.INFO``."""
    return {"name": name, "subject": subject, "queue_group": queue_group, "metadata": {}}


def ping_response(identity: MicroIdentity) -> dict[str, Any]:
    """The ``$SRV.PING`` answer."""
    return identity.response(PING_RESPONSE_TYPE)


def info_response(identity: MicroIdentity, endpoints: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``$SRV.INFO`` answer; ``endpoints`` as made by :func:`endpoint_info`."""
    return {**identity.response(INFO_RESPONSE_TYPE), "description": identity.description, "endpoints": endpoints}


def stats_response(identity: MicroIdentity, started: datetime, endpoints: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``$SRV.STATS`` answer; ``endpoints`` as made by :meth:`EndpointCounters.micro_stats`."""
    return {**identity.response(STATS_RESPONSE_TYPE), "started": micro_time(started), "endpoints": endpoints}


@dataclass(slots=True)
class EndpointCounters:
    """Per-endpoint numbers reported in ``$SRV.STATS`` (``data`` field) and by :meth:`ServiceRuntime.stats`."""

    received: int = 0
    succeeded: int = 0
    failed: int = 0
    rejected: int = 0
    in_flight: int = 0
    busy_ns: int = 0
    """Time spent in the handler (and ``on_error``) of messages that finished."""
    errors_by_code: dict[str, int] = field(default_factory=dict)
    last_error: str = ""
    """``code: message`` of the latest failure or rejection (``last_error`` in ``$SRV.STATS``)."""
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    """The same handler times as ``busy_ns``, by bucket (``natriton_handling_seconds`` in ``/metrics``)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        done = self.succeeded + self.failed
        return {
            "received": self.received,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "rejected": self.rejected,
            "in_flight": self.in_flight,
            "average_ms": round(self.busy_ns / done / 1e6, 3) if done else 0.0,
            "errors_by_code": dict(self.errors_by_code),
        }

    def micro_stats(self, name: str, subject: str, queue_group: str, app: Any = None) -> dict[str, Any]:
        """One endpoint in ``$SRV.STATS``: truthful micro numbers, our counters (and the app's under ``app``) in data.

        ``num_requests`` counts every message taken, ``num_errors`` those answered with an error (failed in the
        handler or rejected on overload), ``processing_time`` the time handlers ran (ns) and
        ``average_processing_time`` its mean over finished messages.
        """
        done = self.succeeded + self.failed
        data = self.as_dict()
        if app is not None:
            data["app"] = app
        return {
            "name": name,
            "subject": subject,
            "queue_group": queue_group,
            "num_requests": self.received,
            "num_errors": self.failed + self.rejected,
            "last_error": self.last_error,
            "processing_time": self.busy_ns,
            "average_processing_time": self.busy_ns // done if done else 0,
            "data": data,
        }


class _Endpoint:
    """Dispatches messages of one subscription into bounded concurrent tasks."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        name: str,
        subject: str,
        queue_group: str,
        handler: Handler,
        on_error: ErrorHandler | None,
        on_overload: Handler | None,
        max_concurrency: int,
        traced: bool,
        packed: bool = False,
    ) -> None:
        self.runtime = runtime
        self.packed = packed
        """Whether packs of several messages are unpacked (internal subjects only)."""
        self.name = name
        self.subject = subject
        self.queue_group = queue_group
        self.max_concurrency = max_concurrency
        self.handler = handler
        self.on_error = on_error
        self.on_overload = on_overload
        self.slots = asyncio.Semaphore(max_concurrency)
        self.traced = traced
        self.counters = EndpointCounters()
        self.subscription: Subscription | None = None

    async def dispatch(self, msg: Msg) -> None:
        """Called by nats-py for each message, one at a time: hand it (each of its items, when it is a pack from
        :mod:`natriton.wirebatch` on a ``packed`` endpoint) to a task and return."""
        headers = msg.headers or {}
        if self.packed and wirebatch.BATCH_HEADER in headers:
            try:
                items = wirebatch.unpack(msg.data)
            except msgspec.MsgspecError as exc:  # nobody to answer: a pack carries no envelope of its own
                self.counters.received += 1
                self.counters.failed += 1
                self.counters.last_error = f"{ErrorCode.INVALID_ARGUMENT.value}: malformed pack: {exc}"
                log.warning("%s %s: a malformed pack on %s: %s", self.runtime.name, self.name, msg.subject, exc)
                return
            for item in items:
                await self._take(Inbound(subject=msg.subject, data=item.data, headers=item.headers, reply=msg.reply))
            return
        await self._take(Inbound(subject=msg.subject, data=msg.data, headers=headers, reply=msg.reply))

    async def _take(self, inbound: Inbound) -> None:
        self.counters.received += 1
        if self.slots.locked() and self.on_overload is not None:
            self.counters.rejected += 1
            self.counters.last_error = f"{ErrorCode.OVERLOADED.value}: all {self.max_concurrency} slots busy"
            try:
                await self.on_overload(inbound)
            except Exception:
                log.exception("%s: could not send the overload reply for %s", self.runtime.name, self.name)
            return
        await self.slots.acquire()
        self.counters.in_flight += 1
        self.runtime.spawn(self._run(inbound))

    async def _run(self, inbound: Inbound) -> None:
        started = time.perf_counter_ns()
        ids = bind_request(inbound.headers.get(h.REQUEST_ID, ""), inbound.headers.get(h.MESH_ID, ""))
        try:
            quick = unsampled_child(inbound.headers) if self.traced and self.runtime.only_sampled_parents else None
            if quick is not None:  # a span nobody will see: made without the SDK, current while the handler runs
                token = otel_context.attach(trace.set_span_in_context(quick))
                try:
                    await self.handler(inbound)
                finally:
                    otel_context.detach(token)
            elif self.traced:
                attributes = process_attributes(inbound.subject, self.queue_group, len(inbound.data))
                with hop_span(
                    self.runtime.tracer, f"{self.runtime.name} {self.name}", inbound.headers, attributes=attributes
                ) as span:
                    try:
                        await self.handler(inbound)
                    except MeshError as exc:
                        mark_error(span, exc.code.value, exc.message)
                        raise
                    except Exception:
                        span.set_attribute("error.type", ErrorCode.INTERNAL.value)
                        raise
            else:
                await self.handler(inbound)
            self.counters.succeeded += 1
        except MeshError as exc:
            await self._fail(inbound, exc)
        except Exception as exc:
            log.exception("%s: unhandled error in %s", self.runtime.name, self.name)
            await self._fail(inbound, MeshError(ErrorCode.INTERNAL, f"{self.runtime.name}: {type(exc).__name__}"))
        finally:
            self.counters.in_flight -= 1
            elapsed_ns = time.perf_counter_ns() - started
            self.counters.busy_ns += elapsed_ns
            self.counters.latency.observe_ns(elapsed_ns)
            self.slots.release()
            unbind_request(ids)

    async def _fail(self, inbound: Inbound, error: MeshError) -> None:
        self.counters.failed += 1
        self.counters.last_error = f"{error.code.value}: {error.message}"
        by_code = self.counters.errors_by_code
        by_code[error.code.value] = by_code.get(error.code.value, 0) + 1
        if self.on_error is None:
            log.warning("%s %s: %s (no error handler)", self.runtime.name, self.name, error)
            return
        try:
            await self.on_error(inbound, error)
        except Exception:
            log.exception("%s: could not send the error reply for %s", self.runtime.name, self.name)


CONSUMER_CREATE_RACE = frozenset({10013, 10148})
"""JetStream's "consumer name already in use" / "consumer already exists": another copy created it first."""


async def _subscribe_durable(
    js: JetStreamContext,
    subject: str,
    queue_group: str,
    durable: str,
    stream: str,
    config: ConsumerConfig,
    callback: Callable[[Msg], Awaitable[None]],
    attempts: int = 5,
) -> Subscription:
    """Bind a queue subscription to the durable consumer ``durable``, creating it if it is missing.

    Copies that start together race to create it (nats-py looks it up, finds none, creates it): with the same
    configuration (the deliver subject included) the server takes every create. Should it refuse one (a consumer
    created meanwhile with another configuration, one that a copy is bound to), the copy looks again and binds to it.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await js.subscribe(
                subject,
                queue=queue_group,
                durable=durable,
                stream=stream,
                config=config,
                manual_ack=True,
                cb=callback,
            )
        except BadRequestError as error:
            if error.err_code not in CONSUMER_CREATE_RACE or attempt == attempts:
                raise
            log.info("consumer %s of %s was created by another copy meanwhile; binding to it", durable, stream)
            await asyncio.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


class ServiceRuntime:
    """One service process's connection, endpoints, tracing and lifecycle."""

    def __init__(self, name: str, version: str, settings: CommonSettings) -> None:
        self.name = name
        self.version = version
        self.settings = settings
        self.tracer_provider: TracerProvider = setup_tracing(name, settings.instance_id, version)
        self.tracer: Tracer = self.tracer_provider.get_tracer(f"natriton.{name}", version)
        self.only_sampled_parents = only_sampled_parents()
        """No exporter and no sampler chosen: only hops of a producer's sampled trace record spans."""
        self._nc: NATS | None = None
        self.micro = MicroIdentity(
            name=f"natriton-{name}",
            id=NUID().next().decode(),
            version=version,
            description=f"Natriton {name} service",
            metadata={"instance_id": settings.instance_id},
        )
        """This copy as NATS micro names it (``$SRV.*.<name>.<id>``)."""
        self.shm_domain = shm_domain() if settings.handoff == "auto" else ""
        """The ``/dev/shm`` this copy shares with others (in its heartbeats; '' with hand-off off)."""
        self.started = datetime.now(UTC)
        self._endpoints: list[_Endpoint] = []
        self._control_subscriptions: list[Subscription] = []
        self._other_subscriptions: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.stats_extension: Callable[[], dict[str, Any]] | None = None
        """Extra numbers of the app, reported under ``app`` in every endpoint's ``$SRV.STATS`` data."""
        self.metrics_extension: MetricsSource | None = None
        """The app's extra Prometheus metrics, made at scrape time from the numbers it keeps anyway."""
        self.http_routes: dict[str, RouteHandler] = {}
        """The app's own paths on the metrics HTTP server, by prefix (ingest's live page, ``/streams``)."""
        self.readiness_checks: list[ReadinessCheck] = []
        """The app's own conditions for ``/readyz`` (each '' when fine, else a short reason)."""
        self.app_started = False
        self._beating_since = 0.0
        """Set by the process runner once the app has started (catalog loaded, endpoints added)."""
        self._heartbeat: asyncio.Task[None] | None = None
        self.outbox = wirebatch.Outbox(
            self._publish_plain, self.spawn, lambda: min(self.nc.max_payload, wirebatch.MAX_PACK_BYTES)
        )
        """Messages published with :meth:`publish_soon`, waiting for the end of the turn."""

    # ---------------------------------------------------------------- connection
    @property
    def nc(self) -> NATS:
        """The live NATS connection (after :meth:`connect`)."""
        if self._nc is None:
            raise RuntimeError("ServiceRuntime.connect() has not been called")
        return self._nc

    @property
    def instance_id(self) -> str:
        """This copy's unique id."""
        return self.settings.instance_id

    async def connect(self) -> None:
        """Connect to NATS (retrying while the server is not up yet) and answer ``$SRV.PING/INFO/STATS``."""
        options: dict[str, Any] = {
            "servers": self.settings.nats_servers,
            "name": f"natriton-{self.name}-{self.instance_id}",
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,  # back soon after a NATS restart (requests in flight are sent again then)
            "connect_timeout": 2,
            "allow_reconnect": True,
            "error_cb": self._on_nats_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
        }
        options.update(self.settings.nats_options())  # credentials, NKey, TLS, inbox prefix
        # nats-py has no option for its read size: it reads its module's DEFAULT_BUFFER_SIZE (also the stream
        # reader's limit) on every read; one process, one connection, so setting it here is setting it for ours
        nats_client.DEFAULT_BUFFER_SIZE = self.settings.nats_read_buffer_bytes
        self._nc = await nats.connect(**options)
        self.started = datetime.now(UTC)
        answers: dict[str, Callable[[], dict[str, Any]]] = {
            "PING": lambda: ping_response(self.micro),
            "INFO": self.micro_info,
            "STATS": self.micro_stats,
        }
        for verb in MICRO_VERBS:
            callback = self._control_callback(answers[verb])
            for subject in micro_control_subjects(verb, self.micro.name, self.micro.id):
                self._control_subscriptions.append(await self._nc.subscribe(subject, cb=callback))
        await self._nc.flush()
        log.info("%s %s connected to NATS (instance %s)", self.name, self.version, self.instance_id)

    async def _on_nats_error(self, exc: Exception) -> None:
        log.warning("NATS error: %s: %s", type(exc).__name__, exc)  # e.g. a permission violation names the subject

    async def _on_disconnected(self) -> None:
        if not self._stopping.is_set():
            log.warning("disconnected from NATS, reconnecting")

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS")

    # ---------------------------------------------------------------- endpoints
    async def add_endpoint(
        self,
        name: str,
        subject: str,
        handler: Handler,
        *,
        queue_group: str,
        on_error: ErrorHandler | None = None,
        on_overload: Handler | None = None,
        max_concurrency: int | None = None,
        traced: bool = True,
        packed: bool = False,
    ) -> None:
        """Serve ``subject`` in ``queue_group`` with ``handler``, listed in ``$SRV.INFO`` and ``$SRV.STATS``.

        ``on_overload`` answers a message at once when all slots are busy; without it the message waits.
        ``packed``: unpack packs of several messages (:mod:`natriton.wirebatch`) and handle each item alone; only
        for internal subjects, whose senders are the mesh's own services (a producer on a public subject could
        otherwise hide headers of its choosing, such as another tenant's ``Nats-Request-Info``, inside a pack).
        """
        if not MICRO_NAME.match(name):
            raise ValueError(f"endpoint name {name!r} must match {MICRO_NAME.pattern}")
        if not subject or " " in subject or not queue_group or " " in queue_group:
            raise ValueError("an endpoint needs a subject and a queue group without spaces")
        endpoint = _Endpoint(
            self,
            name,
            subject,
            queue_group,
            handler,
            on_error,
            on_overload,
            max_concurrency or self.settings.max_concurrency,
            traced,
            packed,
        )
        endpoint.subscription = await self.nc.subscribe(subject, queue=queue_group, cb=endpoint.dispatch)
        self._endpoints.append(endpoint)

    async def add_stream_endpoint(
        self,
        name: str,
        stream: str,
        subject: str,
        handler: Handler,
        *,
        durable: str,
        on_error: ErrorHandler | None = None,
        ack_wait_s: float = 10.0,
        max_deliver: int = -1,
        max_ack_pending: int = 256,
        max_concurrency: int | None = None,
    ) -> None:
        """Serve ``subject`` of the JetStream ``stream`` from the durable consumer ``durable``, shared by every
        copy (its deliver group, like the queue group of a plain endpoint, has the consumer's name), with the same
        handler, counters and spans as :meth:`add_endpoint`.

        Messages are not acknowledged here: the handler gets the acknowledgement subject as ``Inbound.reply``, and
        whoever answers the message acknowledges it there (:func:`natriton.pipeline.reply_to_owner`). One left
        unacknowledged for ``ack_wait_s`` is delivered again (up to ``max_deliver`` times; -1: no limit); at most
        ``max_ack_pending`` are out at once over all copies.
        """
        from nats.js.api import AckPolicy, DeliverPolicy

        queue_group = durable  # nats-py binds a queue subscription to the durable consumer of the same name
        endpoint = _Endpoint(
            self,
            name,
            subject,
            queue_group,
            handler,
            on_error,
            None,
            max_concurrency or self.settings.max_concurrency,
            True,
        )
        config = ConsumerConfig(
            durable_name=durable,
            deliver_subject=self._deliver_subject(stream, durable),
            deliver_group=queue_group,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ack_wait_s,
            max_deliver=max_deliver,
            max_ack_pending=max_ack_pending,
            filter_subject=subject,
        )
        endpoint.subscription = await _subscribe_durable(
            self.nc.jetstream(), subject, queue_group, durable, stream, config, endpoint.dispatch
        )
        self._endpoints.append(endpoint)

    def _deliver_subject(self, stream: str, durable: str) -> str:
        """The subject JetStream pushes the consumer's messages to: the same for every copy (one inbox of each would
        make copies that start together overwrite each other's, leaving all but the last idle), under this
        connection's inbox prefix (which secured accounts let the service subscribe to)."""
        prefix = self.nc.new_inbox().rsplit(".", 1)[0]
        return f"{prefix}.deliver.{stream}.{durable}"

    async def subscribe(self, subject: str, handler: Callable[[Msg], Awaitable[None]]) -> Subscription:
        """A plain (non-queue) subscription whose callback runs inline; drained last on shutdown."""
        subscription = await self.nc.subscribe(subject, cb=handler, pending_msgs_limit=1_000_000)
        self._other_subscriptions.append(subscription)
        return subscription

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> None:
        """Publish one message (buffered; nats-py flushes in the background).

        When ``headers`` carry ``traceparent`` and the current span is sampled, the publish gets its own
        ``PRODUCER`` ``send`` span and ``traceparent`` is rewritten (in a copy) to name it.
        """
        if headers is not None and TRACEPARENT in headers:
            with send_span(self.tracer, subject, headers, len(payload)) as sent:
                await self.nc.publish(subject, payload, headers=sent)
            return
        await self.nc.publish(subject, payload, headers=headers)

    def publish_soon(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        """Publish at the end of this event-loop turn, packed with whatever else this process publishes to
        ``subject`` in the same turn (:mod:`natriton.wirebatch`): for internal subjects whose receivers unpack
        (every endpoint does). Trace context is handled as in :meth:`publish`."""
        if TRACEPARENT in headers:
            with send_span(self.tracer, subject, headers, len(payload)) as sent:
                self.outbox.put(subject, payload, sent)
            return
        self.outbox.put(subject, payload, headers)

    async def _publish_plain(self, subject: str, payload: bytes, headers: dict[str, str] | None) -> None:
        await self.nc.publish(subject, payload, headers=headers)

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a coroutine in a task the runtime waits for when draining."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def endpoint_counters(self) -> dict[str, EndpointCounters]:
        """The live counters of every endpoint by name (read by the metrics collector)."""
        return {e.name: e.counters for e in self._endpoints}

    @property
    def stopping(self) -> bool:
        """Whether a stop was asked for (SIGTERM): draining or stopped."""
        return self._stopping.is_set()

    def not_ready_reason(self) -> str:
        """'' when this copy should get traffic, else why not (``/readyz``)."""
        if self.stopping:
            return "draining"
        if self._nc is None:
            return "connecting to NATS"
        if not self._nc.is_connected:
            return "NATS disconnected"
        if not self.app_started:
            return "starting"
        return first_reason(self.readiness_checks)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Counters of every endpoint by name."""
        return {e.name: e.counters.as_dict() for e in self._endpoints}

    # ---------------------------------------------------------------- liveness
    def start_heartbeat(self) -> None:
        """Say this copy is alive every ``heartbeat_interval_s`` (a :class:`~natriton_client.protocol.Heartbeat` on
        :func:`natriton.subjects.heartbeat_subject`), until :meth:`drain` says it is leaving."""
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat_forever())

    def heartbeat(self, *, leaving: bool = False) -> Heartbeat:
        """This copy's heartbeat message."""
        return Heartbeat(
            service=self.name,
            instance=self.instance_id,
            boot=self.micro.id,
            interval_ms=round(self.settings.heartbeat_interval_s * 1000),
            dead_after_ms=round(self.settings.heartbeat_dead_after_s * 1000),
            leaving=leaving,
            up_ms=round((time.monotonic() - self._beating_since) * 1000) if self._beating_since else 0,
            shm_domain=self.shm_domain,
        )

    async def _beat_forever(self) -> None:
        subject = heartbeat_subject(self.name)
        self._beating_since = time.monotonic()
        while True:
            if self.nc.is_connected:
                with contextlib.suppress(Exception):
                    await self.nc.publish(subject, _HEARTBEATS.encode(self.heartbeat()))
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    async def _stop_heartbeat(self) -> None:
        """Stop beating and say this copy is leaving (watchers stop counting it without re-sending its work)."""
        if self._heartbeat is None:
            return
        self._heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._heartbeat
        self._heartbeat = None
        with contextlib.suppress(Exception):
            await self.nc.publish(heartbeat_subject(self.name), _HEARTBEATS.encode(self.heartbeat(leaving=True)))

    # ---------------------------------------------------------------- NATS micro
    def micro_info(self) -> dict[str, Any]:
        """This copy's ``$SRV.INFO`` answer."""
        return info_response(self.micro, [endpoint_info(e.name, e.subject, e.queue_group) for e in self._endpoints])

    def micro_stats(self) -> dict[str, Any]:
        """This copy's ``$SRV.STATS`` answer (the app's numbers are taken once and shown in every endpoint)."""
        app: Any = None
        if self.stats_extension is not None:
            try:
                app = self.stats_extension()
            except Exception as exc:
                log.exception("%s: stats_extension failed", self.name)
                app = {"error": type(exc).__name__}
        endpoints = [e.counters.micro_stats(e.name, e.subject, e.queue_group, app) for e in self._endpoints]
        return stats_response(self.micro, self.started, endpoints)

    def _control_callback(self, answer: Callable[[], dict[str, Any]]) -> Callable[[Msg], Awaitable[None]]:
        async def on_request(msg: Msg) -> None:
            if not msg.reply:
                return
            try:
                body = json.dumps(answer(), default=str).encode()
                await self.nc.publish(msg.reply, body)
            except Exception:
                log.exception("%s: could not answer %s", self.name, msg.subject)

        return on_request

    # ---------------------------------------------------------------- lifecycle
    def request_stop(self) -> None:
        """Ask :meth:`wait_for_stop` to return (signal handlers call this)."""
        self._stopping.set()

    async def wait_for_stop(self) -> None:
        """Block until SIGTERM/SIGINT (or :meth:`request_stop`)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        await self._stopping.wait()

    async def drain(self) -> None:
        """Stop taking new messages, finish accepted work, then close the connection and flush spans."""
        self._stopping.set()
        timeout = self.settings.drain_timeout_s
        log.info("%s draining (up to %.1f s)", self.name, timeout)
        await self._stop_heartbeat()
        # stop taking messages on every endpoint at once; each drain returns when its pending messages are dispatched
        await asyncio.gather(
            *(_drain_subscription(e.subscription) for e in self._endpoints if e.subscription is not None)
        )
        deadline = time.monotonic() + timeout
        self.outbox.flush()
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - time.monotonic()))
            self.outbox.flush()  # what the handlers that just finished published, before the connection closes
        if self._tasks:
            log.warning("%s: %d tasks still running after drain timeout; cancelling", self.name, len(self._tasks))
            for task in list(self._tasks):
                task.cancel()
        # then $SRV, the plain subscriptions and whatever is buffered; the connection closes
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.drain()
        self.tracer_provider.shutdown()
        log.info("%s stopped", self.name)


async def _drain_subscription(subscription: Subscription) -> None:
    with contextlib.suppress(Exception):
        await subscription.drain()  # type: ignore[no-untyped-call]
