"""The thin service runtime over nats-py that every Natriton service runs on.

What it gives a service (see docs/decisions/0001-service-runtime.md for why it is ours and not FastStream):
- one NATS connection with reconnect, optional credentials, a recognisable client name;
- endpoints in a queue group, each message handled in its own task, at most ``max_concurrency`` at once
  (further messages wait in the subscription, or are answered at once by ``on_overload``);
- one OpenTelemetry span per message, the parent taken from the ``traceparent`` header;
- typed errors: a handler raises :class:`~natriton.errors.MeshError` and its ``on_error`` replies;
- registration with ``nats.micro`` so ``$SRV.PING``, ``$SRV.INFO`` and ``$SRV.STATS`` discover every copy;
- a graceful drain on SIGTERM: stop taking messages, finish what was accepted, flush, close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.micro.request import Request as MicroRequest
from nats.micro.service import EndpointConfig, EndpointStats, ServiceConfig
from nats.micro.service import Service as MicroService
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from natriton.errors import ErrorCode, MeshError
from natriton.settings import CommonSettings
from natriton.telemetry import hop_span, mark_error, setup_tracing

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Inbound:
    """One received message, as a handler sees it."""

    subject: str
    data: bytes
    headers: dict[str, str]
    reply: str


Handler = Callable[[Inbound], Awaitable[None]]
ErrorHandler = Callable[[Inbound, MeshError], Awaitable[None]]


@dataclass(slots=True)
class EndpointCounters:
    """Per-endpoint numbers reported in ``$SRV.STATS`` (``data`` field) and by :meth:`ServiceRuntime.stats`."""

    received: int = 0
    succeeded: int = 0
    failed: int = 0
    rejected: int = 0
    in_flight: int = 0
    busy_ns: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)

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


class _Endpoint:
    """Dispatches messages of one subscription into bounded concurrent tasks."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        name: str,
        handler: Handler,
        on_error: ErrorHandler | None,
        on_overload: Handler | None,
        max_concurrency: int,
        traced: bool,
    ) -> None:
        self.runtime = runtime
        self.name = name
        self.handler = handler
        self.on_error = on_error
        self.on_overload = on_overload
        self.slots = asyncio.Semaphore(max_concurrency)
        self.traced = traced
        self.counters = EndpointCounters()
        self.subscription: Subscription | None = None

    async def dispatch(self, msg: Msg) -> None:
        """Called by nats-py for each message, one at a time: hand it to a task and return."""
        inbound = Inbound(subject=msg.subject, data=msg.data, headers=msg.headers or {}, reply=msg.reply)
        self.counters.received += 1
        if self.slots.locked() and self.on_overload is not None:
            self.counters.rejected += 1
            await self.on_overload(inbound)
            return
        await self.slots.acquire()
        self.counters.in_flight += 1
        self.runtime.spawn(self._run(inbound))

    async def _run(self, inbound: Inbound) -> None:
        started = time.perf_counter_ns()
        try:
            if self.traced:
                with hop_span(self.runtime.tracer, f"{self.runtime.name} {self.name}", inbound.headers) as span:
                    span.set_attribute("messaging.system", "nats")
                    span.set_attribute("messaging.destination.name", inbound.subject)
                    try:
                        await self.handler(inbound)
                    except MeshError as exc:
                        mark_error(span, exc.code.value, exc.message)
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
            self.counters.busy_ns += time.perf_counter_ns() - started
            self.slots.release()

    async def _fail(self, inbound: Inbound, error: MeshError) -> None:
        self.counters.failed += 1
        by_code = self.counters.errors_by_code
        by_code[error.code.value] = by_code.get(error.code.value, 0) + 1
        if self.on_error is None:
            log.warning("%s %s: %s (no error handler)", self.runtime.name, self.name, error)
            return
        try:
            await self.on_error(inbound, error)
        except Exception:
            log.exception("%s: could not send the error reply for %s", self.runtime.name, self.name)


class ServiceRuntime:
    """One service process's connection, endpoints, tracing and lifecycle."""

    def __init__(self, name: str, version: str, settings: CommonSettings) -> None:
        self.name = name
        self.version = version
        self.settings = settings
        self.tracer_provider: TracerProvider = setup_tracing(name, settings.instance_id, version)
        self.tracer: Tracer = self.tracer_provider.get_tracer(f"natriton.{name}", version)
        self._nc: NATS | None = None
        self._micro: MicroService | None = None
        self._endpoints: list[_Endpoint] = []
        self._other_subscriptions: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.stats_extension: Callable[[], dict[str, Any]] | None = None
        """Extra numbers of the app, reported under ``app`` in every endpoint's ``$SRV.STATS`` data."""

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
        """Connect to NATS (retrying while the server is not up yet) and register with nats.micro."""
        options: dict[str, Any] = {
            "servers": self.settings.nats_servers,
            "name": f"natriton-{self.name}-{self.instance_id}",
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 1,
            "connect_timeout": 2,
            "allow_reconnect": True,
            "error_cb": self._on_nats_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
        }
        if self.settings.nats_creds_file:
            options["user_credentials"] = self.settings.nats_creds_file
        self._nc = await nats.connect(**options)
        self._micro = MicroService(
            self._nc,
            ServiceConfig(
                name=f"natriton-{self.name}",
                version=self.version,
                description=f"Natriton {self.name} service",
                metadata={"instance_id": self.instance_id},
                stats_handler=self._micro_stats,
            ),
        )
        await self._micro.start()
        log.info("%s %s connected to NATS (instance %s)", self.name, self.version, self.instance_id)

    async def _on_nats_error(self, exc: Exception) -> None:
        log.warning("NATS error: %s", type(exc).__name__)

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
    ) -> None:
        """Serve ``subject`` in ``queue_group`` with ``handler``, listed in nats.micro INFO and STATS.

        ``on_overload`` answers a message at once when all slots are busy; without it the message waits.
        """
        endpoint = _Endpoint(
            self, name, handler, on_error, on_overload, max_concurrency or self.settings.max_concurrency, traced
        )
        micro = self._require_micro()

        async def micro_handler(request: MicroRequest) -> None:
            await endpoint.dispatch(request._msg)

        await micro.add_endpoint(
            EndpointConfig(name=name, subject=subject, queue_group=queue_group, handler=micro_handler)
        )
        # nats.micro keeps the subscription private; we need it to drain (not drop) on shutdown.
        endpoint.subscription = micro._endpoints[-1]._subscription
        self._endpoints.append(endpoint)

    async def subscribe(self, subject: str, handler: Callable[[Msg], Awaitable[None]]) -> Subscription:
        """A plain (non-queue) subscription whose callback runs inline; drained last on shutdown."""
        subscription = await self.nc.subscribe(subject, cb=handler, pending_msgs_limit=1_000_000)
        self._other_subscriptions.append(subscription)
        return subscription

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> None:
        """Publish one message (buffered; nats-py flushes in the background)."""
        await self.nc.publish(subject, payload, headers=headers)

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a coroutine in a task the runtime waits for when draining."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def stats(self) -> dict[str, dict[str, Any]]:
        """Counters of every endpoint by name."""
        return {e.name: e.counters.as_dict() for e in self._endpoints}

    def _micro_stats(self, stats: EndpointStats) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for endpoint in self._endpoints:
            if endpoint.name == stats.name:
                data = endpoint.counters.as_dict()
        if self.stats_extension is not None:
            data["app"] = self.stats_extension()
        return data

    def _require_micro(self) -> MicroService:
        if self._micro is None:
            raise RuntimeError("ServiceRuntime.connect() has not been called")
        return self._micro

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
        for endpoint in self._endpoints:
            if endpoint.subscription is not None:
                with contextlib.suppress(Exception):
                    await endpoint.subscription.drain()  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + timeout
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - time.monotonic()))
        if self._tasks:
            log.warning("%s: %d tasks still running after drain timeout; cancelling", self.name, len(self._tasks))
            for task in list(self._tasks):
                task.cancel()
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.drain()
        self.tracer_provider.shutdown()
        log.info("%s stopped", self.name)
