"""The asyncio client of the public protocol.

:class:`AsyncClient` is the recommended API: typed exceptions (:mod:`natriton_client.errors`), retries that honour
``retry_after_ms``, ``traceparent`` propagation, many requests at once, fire-and-forget and results subscriptions.

:class:`MeshClient` is the small low-level client the demo, the tests and the load tests use: it returns the raw
:data:`~natriton_client.protocol.Reply` (errors included) instead of raising, and can send any bytes.

Producers do not need either: docs/protocol.md shows the same exchange with a plain NATS client.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from types import TracebackType
from typing import Any, Literal, Self, overload

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from natriton_client._wire import (
    REPLY_CODEC,
    REQUEST_CODEC,
    Deadline,
    check_request_id,
    check_results_to,
    decode_reply,
    make_request,
    new_request_id,
    new_results_subject,
    request_headers,
    trace_headers,
)
from natriton_client.errors import (
    ConnectionFailed,
    NatritonError,
    NoReply,
    NoResponders,
    PayloadTooLarge,
    Unavailable,
    error_from_reply,
)
from natriton_client.liveness import HeartbeatWatch
from natriton_client.protocol import (
    INFER_SUBJECT,
    INGEST_HEARTBEAT_SUBJECT,
    JSON,
    MSGPACK,
    AudioInput,
    ErrorReply,
    Header,
    InferRequest,
    InferResponse,
    Reply,
    Tensor,
    now_ms,
    results_subject,
)
from natriton_client.retry import RetryPolicy, retry_delay_s

__all__ = ["AsyncClient", "AsyncResults", "InferCall", "MeshClient", "connection_options", "new_results_subject"]

DEFAULT_URL = "nats://127.0.0.1:4222"
_URL_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*://)[^@/]+@", re.IGNORECASE)


def connection_options(
    creds_file: str = "",
    nkey_seed_file: str = "",
    tls_ca_file: str = "",
    tls_cert_file: str = "",
    tls_key_file: str = "",
    inbox_prefix: str = "",
) -> dict[str, Any]:
    """nats-py ``connect`` options for a locked-down mesh ('' leaves each out): a ``.creds`` file or an NKey seed
    file (read by nats-py when it connects; needs the ``nkeys`` package), a TLS context verifying the server with
    ``tls_ca_file`` (else the system's CAs) and presenting ``tls_cert_file``/``tls_key_file``, and the prefix of
    the connection's reply inboxes."""
    options: dict[str, Any] = {}
    if creds_file:
        options["user_credentials"] = creds_file
    if nkey_seed_file:
        options["nkeys_seed"] = nkey_seed_file
    if tls_ca_file or tls_cert_file:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls_ca_file or None)
        if tls_cert_file:
            context.load_cert_chain(tls_cert_file, tls_key_file or None)
        options["tls"] = context
    if inbox_prefix:
        options["inbox_prefix"] = inbox_prefix
    return options


_REQUEST = REQUEST_CODEC
_REPLY = REPLY_CODEC


@dataclass(frozen=True, slots=True)
class InferCall:
    """One request for :meth:`AsyncClient.infer_many`: the arguments of :meth:`AsyncClient.infer`.

    ``timeout_s`` ``None`` means the ``timeout_s`` given to ``infer_many`` (else the client's default).
    """

    model: str
    _: KW_ONLY
    image: bytes | None = None
    tensors: Sequence[Tensor] | None = None
    text: str | None = None
    audio: AudioInput | None = None
    version: str = ""
    top_k: int = 5
    use_cache: bool = True
    request_id: str = ""
    timeout_s: float | None = None

    def to_request(self) -> InferRequest:
        """The wire request (``ValueError`` unless exactly one of image, tensors, text, audio is given)."""
        return make_request(
            self.model,
            image=self.image,
            tensors=self.tensors,
            text=self.text,
            audio=self.audio,
            version=self.version,
            top_k=self.top_k,
            use_cache=self.use_cache,
        )


class AsyncResults:
    """A subscription to a results subject: yields every answer published there, results *and* errors.

    Iterate it (``async for reply in results``) or call :meth:`next`; each item is an
    :class:`~natriton_client.protocol.InferResponse` or an :class:`~natriton_client.protocol.ErrorReply` (match them
    to requests by ``request_id``). A message that does not decode is yielded as an ``internal`` ErrorReply.
    Close it (``await results.close()`` or ``async with``) to unsubscribe; closing the client closes it too.
    """

    def __init__(self, sub: Subscription, subject: str, client: AsyncClient | None = None) -> None:
        self._sub = sub
        self._client = client
        self.subject = subject
        """The subject subscribed to (pass it as ``results_to=``)."""
        self._closed = False

    async def next(self, timeout_s: float | None = None) -> Reply:
        """The next answer; built-in ``TimeoutError`` after ``timeout_s`` (``None``: wait for ever);
        ``ConnectionFailed`` once the subscription or the connection is closed."""
        reply = await self.next_or_none(timeout_s)
        if reply is None:
            raise ConnectionFailed(f"the results subscription on {self.subject!r} is closed", attempts=0)
        return reply

    async def next_or_none(self, timeout_s: float | None = None) -> Reply | None:
        """:meth:`next`, but ``None`` once the subscription or the connection is closed."""
        if self._closed:
            return None
        try:
            msg: Msg = await asyncio.wait_for(self._sub.messages.__anext__(), timeout_s)
        except StopAsyncIteration:
            return None
        return decode_reply(msg.data, msg.headers)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Reply:
        reply = await self.next_or_none(None)
        if reply is None:
            raise StopAsyncIteration
        return reply

    @property
    def pending(self) -> int:
        """Answers received and not read yet."""
        return self._sub.pending_msgs

    async def close(self) -> None:
        """Unsubscribe (answers not read yet are dropped). Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self._client is not None:
            self._client._results.discard(self)
        with contextlib.suppress(nats.errors.Error):
            await self._sub.unsubscribe()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class AsyncClient:
    """The asyncio client. Make one with :meth:`connect`; use it from one event loop.

    ``timeout_s``: default budget of a call (all its retries included); ``retry``: default :class:`RetryPolicy`;
    ``reply_grace_s``: how much longer than the mesh's deadline to wait for its reply (the mesh answers
    ``deadline_exceeded`` itself at its deadline; only when nothing comes at all does the client raise
    :class:`~natriton_client.errors.NoReply`); ``propagate_trace``: send the current OpenTelemetry span as
    ``traceparent`` when opentelemetry is installed; ``resend_on_ingest_loss``: watch the ingest copies'
    heartbeats and, when one dies, send the requests waiting for an answer again (up to ``max_resends`` times each;
    the first answer wins), so a dead ingest copy costs a caller no failure.
    """

    def __init__(
        self,
        nc: NATS,
        *,
        owns_connection: bool = False,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        reply_grace_s: float = 1.0,
        propagate_trace: bool = True,
        resend_on_ingest_loss: bool = True,
        max_resends: int = 3,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        self.nc = nc
        """The NATS connection (shared with the caller when it was passed to :meth:`connect`)."""
        self.timeout_s = timeout_s
        self.retry = retry if retry is not None else RetryPolicy()
        self.reply_grace_s = reply_grace_s
        self.propagate_trace = propagate_trace
        self._owns_connection = owns_connection
        self._rng = random.Random()
        self._results: set[AsyncResults] = set()
        self._closed = False
        self.max_resends = max_resends if resend_on_ingest_loss else 0
        self.ingest_copies = HeartbeatWatch(INGEST_HEARTBEAT_SUBJECT, on_lost=lambda _: None)
        """The ingest copies alive (started with the first request when ``resend_on_ingest_loss``)."""
        self._watch_started: asyncio.Task[None] | None = None
        self.resent = 0
        """Requests sent again because an ingest copy died."""

    @classmethod
    async def connect(
        cls,
        servers: str | Sequence[str] | NATS = DEFAULT_URL,
        *,
        name: str = "natriton-client",
        connect_timeout_s: float = 5.0,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        reply_grace_s: float = 1.0,
        propagate_trace: bool = True,
        resend_on_ingest_loss: bool = True,
        creds_file: str = "",
        nkey_seed_file: str = "",
        tls_ca_file: str = "",
        tls_cert_file: str = "",
        tls_key_file: str = "",
        inbox_prefix: str = "",
        **nats_options: Any,
    ) -> AsyncClient:
        """Connect to NATS at ``servers`` (a URL or a list of them), or wrap a connected nats-py client (then
        :meth:`close` leaves that connection open). ``nats_options`` go to nats-py's ``connect``. Raises
        :class:`~natriton_client.errors.ConnectionFailed` when no server answers within ``connect_timeout_s``.

        Locked-down meshes (docs/operations.md, Security): ``creds_file`` (JWT ``.creds``) or ``nkey_seed_file``
        (a file with your NKey seed) authenticate you; ``tls_ca_file`` verifies the server (TLS), with
        ``tls_cert_file``/``tls_key_file`` for mutual TLS; ``inbox_prefix`` (e.g. ``_INBOX.<you>``) names your
        reply inboxes, the only ones your user may subscribe to."""
        nats_options.update(
            connection_options(creds_file, nkey_seed_file, tls_ca_file, tls_cert_file, tls_key_file, inbox_prefix)
        )
        options: dict[str, Any] = {
            "timeout_s": timeout_s,
            "retry": retry,
            "reply_grace_s": reply_grace_s,
            "propagate_trace": propagate_trace,
            "resend_on_ingest_loss": resend_on_ingest_loss,
        }
        if isinstance(servers, NATS):
            return cls(servers, owns_connection=False, **options)
        nc = NATS()
        urls = [servers] if isinstance(servers, str) else list(servers)
        try:
            await asyncio.wait_for(
                nc.connect(servers=urls, name=name, connect_timeout=connect_timeout_s, **nats_options),  # type: ignore[arg-type]
                connect_timeout_s,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            shown = ", ".join(_URL_USERINFO.sub(r"\g<1>***@", u) for u in urls)
            raise ConnectionFailed(f"cannot connect to NATS at {shown}: {exc!r}", attempts=0) from exc
        return cls(nc, owns_connection=True, **options)

    # ------------------------------------------------------------------ request/reply
    async def infer(
        self,
        model: str,
        *,
        image: bytes | None = None,
        tensors: Sequence[Tensor] | None = None,
        text: str | None = None,
        audio: AudioInput | None = None,
        version: str = "",
        top_k: int = 5,
        use_cache: bool = True,
        timeout_s: float | None = None,
        deadline_ms: int | None = None,
        request_id: str = "",
        json: bool = False,
        traceparent: str | None = None,
        retry: RetryPolicy | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> InferResponse:
        """Run ``model`` on exactly one of ``image=`` (JPEG/PNG bytes), ``tensors=``, ``text=`` or ``audio=``
        (an :class:`~natriton_client.protocol.AudioInput`: a WAV/FLAC/OGG file, or PCM with its sample rate).

        ``timeout_s`` is the budget of the whole call, retries included (default: the client's); ``deadline_ms``
        an absolute deadline in Unix epoch ms instead (it wins, as in the protocol). ``request_id`` is echoed back
        (need not be unique). Retryable errors are retried per ``retry`` (default: the client's policy).

        Raises a :class:`~natriton_client.errors.NatritonError` subclass for every failure.
        """
        request = make_request(
            model,
            image=image,
            tensors=tensors,
            text=text,
            audio=audio,
            version=version,
            top_k=top_k,
            use_cache=use_cache,
        )
        return await self.infer_request(
            request,
            timeout_s=timeout_s,
            deadline_ms=deadline_ms,
            request_id=request_id,
            json=json,
            traceparent=traceparent,
            retry=retry,
            extra_headers=extra_headers,
        )

    async def infer_request(
        self,
        request: InferRequest,
        *,
        timeout_s: float | None = None,
        deadline_ms: int | None = None,
        request_id: str = "",
        json: bool = False,
        traceparent: str | None = None,
        retry: RetryPolicy | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> InferResponse:
        """:meth:`infer` for a ready-made :class:`~natriton_client.protocol.InferRequest`."""
        check_request_id(request_id)
        deadline = Deadline.of(
            timeout_s=timeout_s,
            deadline_ms=deadline_ms,
            default_timeout_s=self.timeout_s,
            now_s=time.monotonic(),
            now_ms=now_ms(),
        )
        body = _REQUEST.encode(request, json=json)
        trace = trace_headers(traceparent, propagate=self.propagate_trace)
        policy = retry if retry is not None else self.retry
        started = time.monotonic()
        last: NatritonError | None = None
        retries = 0
        while True:
            now = time.monotonic()
            try:
                deadline_header = deadline.headers(now)
            except NatritonError as exc:
                exc.request_id = request_id
                if last is not None:  # a wait left no time: the error that caused it is the real story
                    raise last from None
                raise
            headers = request_headers(
                json=json, deadline=deadline_header, request_id=request_id, trace=trace, extra=extra_headers
            )

            def again(at_s: float) -> dict[str, str]:
                """The headers of a resend at ``at_s`` (the time left then)."""
                return request_headers(
                    json=json, deadline=deadline.headers(at_s), request_id=request_id, trace=trace, extra=extra_headers
                )

            try:
                local_timeout_s = deadline.remaining_s(now) + self.reply_grace_s
                return await self._request(body, headers, local_timeout_s=local_timeout_s, json=json, again=again)
            except NatritonError as exc:
                if not exc.request_id:
                    exc.request_id = request_id
                exc.attempts = retries + 1
                last = exc
            now = time.monotonic()
            delay = retry_delay_s(
                policy,
                last,
                retries_done=retries,
                elapsed_s=now - started,
                remaining_s=deadline.remaining_s(now),
                rand=self._rng.random(),
            )
            if delay is None:
                raise last
            retries += 1
            await asyncio.sleep(delay)

    async def _request(
        self,
        body: bytes,
        headers: dict[str, str],
        *,
        local_timeout_s: float,
        json: bool,
        again: Callable[[float], dict[str, str]] | None = None,
    ) -> InferResponse:
        """One attempt: send, wait for the one reply, raise it as a typed exception if it is an error.

        While waiting, an ingest copy found dead (it may have held this request) sends the request again with
        ``again(now)``'s headers; every send stays open and the first answer wins. When no ingest copy listens (NATS
        says "no responders": the copies are restarting, or NATS itself just came back and they have not reconnected
        yet), the request is sent again at the next ingest heartbeat, if one comes within the deadline.
        """
        watch = await self._watch_ingest() if again is not None else None
        give_up = time.monotonic() + local_timeout_s
        sends = {asyncio.ensure_future(self._send(body, headers, local_timeout_s, len(body)))}
        resends = 0
        try:
            while True:
                loss = asyncio.ensure_future(watch.next_loss()) if watch and resends < self.max_resends else None
                waiting: set[asyncio.Future[Any]] = {*sends, loss} if loss is not None else set(sends)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if loss is not None and not loss.done():
                    loss.cancel()
                for send in sends & done:
                    sends.discard(send)
                    error = send.exception()
                    if error is None:
                        msg: Msg = send.result()
                        reply = decode_reply(msg.data, msg.headers, json=json)
                        if isinstance(reply, ErrorReply):
                            raise error_from_reply(reply)
                        return reply
                    # copies were alive a moment ago (NATS just came back, or they are restarting): wait for one
                    coming_back = watch is not None and watch.live("ingest") > 0
                    if isinstance(error, NoResponders) and coming_back and resends < self.max_resends:
                        assert watch is not None and again is not None
                        resends += 1
                        self.resent += 1
                        sends.add(asyncio.ensure_future(self._send_when_ingest_is_back(watch, body, again, give_up)))
                    elif not sends:
                        raise error
                if loss is not None and loss in done and again is not None:
                    now = time.monotonic()
                    if give_up - now <= self.reply_grace_s:
                        continue  # no time left for another answer
                    resends += 1
                    self.resent += 1
                    sends.add(asyncio.ensure_future(self._send(body, again(now), give_up - now, len(body))))
        finally:
            for send in sends:
                send.cancel()

    async def _send(self, body: bytes, headers: dict[str, str], timeout_s: float, size: int) -> Msg:
        """Send once and wait for the reply message; nats-py's failures become typed errors."""
        try:
            return await self.nc.request(INFER_SUBJECT, body, timeout=timeout_s, headers=headers)
        except nats.errors.NoRespondersError as exc:
            raise NoResponders(f"no ingest copy is listening on {INFER_SUBJECT} (NATS: no responders)") from exc
        except nats.errors.TimeoutError as exc:
            raise NoReply(f"no reply at all within {timeout_s:.3f} s") from exc
        except nats.errors.Error as exc:
            raise _send_error(exc, size, self.nc) from exc

    async def _send_when_ingest_is_back(
        self, watch: HeartbeatWatch, body: bytes, again: Callable[[float], dict[str, str]], give_up: float
    ) -> Msg:
        """Send at the next ingest heartbeat (``NoResponders`` when none comes in time)."""
        try:
            async with asyncio.timeout(max(0.0, give_up - time.monotonic() - self.reply_grace_s)):
                await watch.next_heartbeat()
        except TimeoutError:
            raise NoResponders(f"no ingest copy is listening on {INFER_SUBJECT} (NATS: no responders)") from None
        now = time.monotonic()
        return await self._send(body, again(now), give_up - now, len(body))

    async def _watch_ingest(self) -> HeartbeatWatch | None:
        """The ingest heartbeat watch, started on first use; ``None`` when resending is off."""
        if self.max_resends <= 0 or self.nc.is_closed:
            return None  # (a closed connection: the send itself raises ConnectionFailed)
        if self._watch_started is None:
            self._watch_started = asyncio.ensure_future(self.ingest_copies.start(self.nc))
        try:
            await asyncio.shield(self._watch_started)
        except nats.errors.Error:
            self._watch_started = None  # try again with the next request; this one goes without resends
            return None
        return self.ingest_copies

    # ------------------------------------------------------------------ many at once
    @overload
    def infer_many(
        self,
        requests: Iterable[InferCall | InferRequest],
        *,
        concurrency: int = ...,
        ordered: bool = ...,
        return_exceptions: Literal[False] = ...,
        timeout_s: float | None = ...,
        json: bool = ...,
        retry: RetryPolicy | None = ...,
    ) -> AsyncIterator[InferResponse]: ...

    @overload
    def infer_many(
        self,
        requests: Iterable[InferCall | InferRequest],
        *,
        concurrency: int = ...,
        ordered: bool = ...,
        return_exceptions: Literal[True],
        timeout_s: float | None = ...,
        json: bool = ...,
        retry: RetryPolicy | None = ...,
    ) -> AsyncIterator[InferResponse | NatritonError]: ...

    @overload
    def infer_many(
        self,
        requests: Iterable[InferCall | InferRequest],
        *,
        concurrency: int = ...,
        ordered: bool = ...,
        return_exceptions: bool,
        timeout_s: float | None = ...,
        json: bool = ...,
        retry: RetryPolicy | None = ...,
    ) -> AsyncIterator[InferResponse | NatritonError]: ...

    async def infer_many(
        self,
        requests: Iterable[InferCall | InferRequest],
        *,
        concurrency: int = 8,
        ordered: bool = True,
        return_exceptions: bool = False,
        timeout_s: float | None = None,
        json: bool = False,
        retry: RetryPolicy | None = None,
    ) -> AsyncIterator[InferResponse | NatritonError]:
        """Run many requests with at most ``concurrency`` in flight; yield their responses in the order of
        ``requests`` (``ordered=True``) or as they complete (match them by ``request_id`` then).

        ``requests`` is read lazily (a generator of any length is fine). The first failure is raised (and the
        requests still in flight are cancelled) unless ``return_exceptions=True``, which yields the
        :class:`~natriton_client.errors.NatritonError` in the response's place instead. Close the iterator early
        with ``contextlib.aclosing`` to cancel what is still in flight at once.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        source = iter(requests)
        in_flight: deque[asyncio.Task[InferResponse]] = deque()

        def start_next() -> None:
            for item in source:
                in_flight.append(asyncio.ensure_future(self._infer_item(item, timeout_s, json, retry)))
                return

        def outcome(task: asyncio.Task[InferResponse]) -> InferResponse | NatritonError:
            exc = task.exception()
            if exc is None:
                return task.result()
            if return_exceptions and isinstance(exc, NatritonError):
                return exc
            raise exc

        try:
            for _ in range(concurrency):
                start_next()
            while in_flight:
                if ordered:
                    head = in_flight.popleft()
                    await asyncio.wait([head])
                    done = [head]
                else:
                    finished, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    done = [t for t in in_flight if t in finished]  # in request order among the finished
                    for task in done:
                        in_flight.remove(task)
                for _ in done:
                    start_next()
                for task in done:
                    yield outcome(task)
        finally:
            for task in in_flight:
                task.cancel()
            if in_flight:
                await asyncio.wait(in_flight)
                for task in in_flight:  # retrieve, so asyncio does not log "exception never retrieved"
                    if not task.cancelled():
                        task.exception()

    async def _infer_item(
        self, item: InferCall | InferRequest, timeout_s: float | None, json: bool, retry: RetryPolicy | None
    ) -> InferResponse:
        if isinstance(item, InferCall):
            return await self.infer_request(
                item.to_request(),
                timeout_s=item.timeout_s if item.timeout_s is not None else timeout_s,
                request_id=item.request_id,
                json=json,
                retry=retry,
            )
        return await self.infer_request(item, timeout_s=timeout_s, json=json, retry=retry)

    # ------------------------------------------------------------------ fire-and-forget
    async def publish(
        self,
        model: str,
        *,
        image: bytes | None = None,
        tensors: Sequence[Tensor] | None = None,
        text: str | None = None,
        audio: AudioInput | None = None,
        version: str = "",
        top_k: int = 5,
        use_cache: bool = True,
        results_to: str | None = None,
        request_id: str = "",
        timeout_s: float | None = None,
        deadline_ms: int | None = None,
        json: bool = False,
        traceparent: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> str:
        """Fire-and-forget: send without waiting; return the request id (a new one when none is given).

        The answer (result or error) is published on ``results_to``: a subject of yours (subscribe to it first
        with :meth:`results`: core NATS is at-most-once), ``"shared"`` for ``natriton.v1.results.<model>``, or
        ``None`` for nowhere (the request still runs and warms the cache). A ``results_to`` the mesh would drop
        raises :class:`~natriton_client.errors.InvalidArgument` here. Nothing is retried.
        """
        request = make_request(
            model,
            image=image,
            tensors=tensors,
            text=text,
            audio=audio,
            version=version,
            top_k=top_k,
            use_cache=use_cache,
        )
        return await self.publish_request(
            request,
            results_to=results_to,
            request_id=request_id,
            timeout_s=timeout_s,
            deadline_ms=deadline_ms,
            json=json,
            traceparent=traceparent,
            extra_headers=extra_headers,
        )

    async def publish_request(
        self,
        request: InferRequest,
        *,
        results_to: str | None = None,
        request_id: str = "",
        timeout_s: float | None = None,
        deadline_ms: int | None = None,
        json: bool = False,
        traceparent: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> str:
        """:meth:`publish` for a ready-made :class:`~natriton_client.protocol.InferRequest`."""
        request_id = request_id or new_request_id()
        check_request_id(request_id)
        destination = check_results_to(results_to) if results_to is not None else None
        now = time.monotonic()
        deadline = Deadline.of(
            timeout_s=timeout_s, deadline_ms=deadline_ms, default_timeout_s=self.timeout_s, now_s=now, now_ms=now_ms()
        )
        try:
            deadline_header = deadline.headers(now)
        except NatritonError as exc:
            exc.request_id = request_id
            raise
        headers = request_headers(
            json=json,
            deadline=deadline_header,
            request_id=request_id,
            trace=trace_headers(traceparent, propagate=self.propagate_trace),
            results_to=destination,
            extra=extra_headers,
        )
        body = _REQUEST.encode(request, json=json)
        try:
            await self.nc.publish(INFER_SUBJECT, body, headers=headers)
        except nats.errors.Error as exc:
            error = _send_error(exc, len(body), self.nc)
            error.request_id, error.attempts = request_id, 0
            raise error from exc
        return request_id

    async def results(self, subject: str | None = None, *, model: str | None = None, queue: str = "") -> AsyncResults:
        """Subscribe to a results subject: ``subject`` (yours, as given to ``publish(results_to=...)``), or the
        shared one of ``model`` (``natriton.v1.results.<model>``), or with neither a new unique ``_INBOX.``
        subject (``results.subject``). ``queue``: share the answers among the subscribers of a queue group."""
        if subject is not None and model is not None:
            raise ValueError("give subject= or model=, not both")
        target = results_subject(model) if model is not None else subject or self.nc.new_inbox()
        try:
            sub = await self.nc.subscribe(target, queue=queue)
        except nats.errors.Error as exc:
            raise _send_error(exc, 0, self.nc) from exc
        results = AsyncResults(sub, target, self)
        self._results.add(results)
        return results

    # ------------------------------------------------------------------ lifecycle
    async def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until everything published so far has reached the NATS server."""
        try:
            await self.nc.flush(timeout=timeout_s)  # type: ignore[arg-type]
        except nats.errors.TimeoutError as exc:
            raise NoReply(f"the NATS server did not confirm a flush within {timeout_s} s", attempts=0) from exc
        except nats.errors.Error as exc:
            raise _send_error(exc, 0, self.nc) from exc

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`close` was called (or the connection is closed)."""
        return self._closed or self.nc.is_closed

    async def close(self) -> None:
        """Close open results subscriptions; drain and close the connection if this client made it."""
        if self._closed:
            return
        self._closed = True
        for results in list(self._results):
            await results.close()
        if self._watch_started is not None:
            await self.ingest_copies.stop()
        if self._owns_connection:
            with contextlib.suppress(nats.errors.Error):
                await self.nc.drain()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _send_error(exc: nats.errors.Error, size: int, nc: NATS) -> NatritonError:
    """The typed error for a nats-py failure to send."""
    if isinstance(exc, nats.errors.MaxPayloadError):
        return PayloadTooLarge(f"a request of {size} bytes is over the NATS server's max_payload ({nc.max_payload})")
    if isinstance(exc, nats.errors.ConnectionClosedError | nats.errors.ConnectionDrainingError):
        return ConnectionFailed(f"the NATS connection is closed or draining ({type(exc).__name__})")
    return Unavailable(f"NATS failed to send the request: {exc!r}")


# ----------------------------------------------------------------------------------------------------
# The low-level client (kept as it was: returns the Reply, never raises for an error reply)
# ----------------------------------------------------------------------------------------------------
class MeshClient:
    """Send inference requests to ``natriton.v1.infer`` and decode the typed replies."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc

    @classmethod
    async def connect(cls, url: str, **nats_options: Any) -> MeshClient:
        """Connect to NATS at ``url``; ``nats_options`` go to nats-py's ``connect`` (see :func:`connection_options`)."""
        return cls(await nats.connect(url, name="natriton-client", **nats_options))

    async def close(self) -> None:
        """Drain and close the connection."""
        await self.nc.drain()

    async def infer(
        self,
        model: str,
        *,
        image: bytes | None = None,
        tensors: Sequence[Tensor] | None = None,
        text: str | None = None,
        audio: AudioInput | None = None,
        version: str = "",
        top_k: int = 5,
        use_cache: bool = True,
        timeout_s: float = 10.0,
        json: bool = False,
        request_id: str = "",
        extra_headers: dict[str, str] | None = None,
    ) -> Reply:
        """One request/reply; the mesh's deadline is ``timeout_s`` too (sent as ``Natriton-Timeout-Ms``).

        Raises ``nats.errors.TimeoutError`` only if no reply at all arrives (the mesh itself answers
        ``deadline_exceeded`` before that).
        """
        request = make_request(
            model,
            image=image,
            tensors=tensors,
            text=text,
            audio=audio,
            version=version,
            top_k=top_k,
            use_cache=use_cache,
        )
        return await self.send(
            _REQUEST.encode(request, json=json),
            timeout_s=timeout_s,
            json=json,
            request_id=request_id,
            extra_headers=extra_headers,
        )

    async def send(
        self,
        body: bytes,
        *,
        timeout_s: float = 10.0,
        json: bool = False,
        request_id: str = "",
        extra_headers: dict[str, str] | None = None,
    ) -> Reply:
        """Send an already-encoded body (any bytes, valid or not) and decode the reply."""
        out = {Header.TIMEOUT_MS: str(int(timeout_s * 1000)), Header.CONTENT_TYPE: JSON if json else MSGPACK}
        if request_id:
            out[Header.REQUEST_ID] = request_id
        out.update(extra_headers or {})
        # a little longer than the mesh's own deadline, so the mesh's deadline_exceeded reply wins
        msg = await self.nc.request(INFER_SUBJECT, body, timeout=timeout_s + 1.0, headers=out)
        return _REPLY.decode(msg.data, json=json)
