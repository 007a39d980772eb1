"""The blocking client: :class:`Client` has :class:`~natriton_client.aio.AsyncClient`'s API without ``await``.

It runs an ``AsyncClient`` on a private event loop in a background (daemon) thread, so it works in plain scripts,
in threads (it is thread-safe: calls from several threads run concurrently on its loop) and beside a running
event loop (notebooks). Close it (``close()`` or ``with``) to stop the thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, overload

from natriton_client.aio import DEFAULT_URL, AsyncClient, AsyncResults, InferCall
from natriton_client.errors import NatritonError
from natriton_client.protocol import AudioInput, InferRequest, InferResponse, Reply, Tensor
from natriton_client.retry import RetryPolicy

__all__ = ["Client", "Results"]

T = TypeVar("T")


class _End:
    """Marks the end of an async iterator driven from another thread."""


_END = _End()


class _LoopThread:
    """An event loop running for ever in a daemon thread; :meth:`run` executes a coroutine on it and waits."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._stopped = False
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            try:
                tasks = asyncio.all_tasks(self.loop)
                for task in tasks:
                    task.cancel()
                if tasks:
                    self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and return its result (its exception is raised here).

        It runs in a copy of the caller's context, so context variables (the current OpenTelemetry span
        among them) cross over to the loop's thread."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("the blocking Client cannot be called from its own event loop (use AsyncClient)")
        if self._stopped:
            coro.close()
            raise RuntimeError("the Client is closed")
        future = asyncio.run_coroutine_threadsafe(_in_context(coro, contextvars.copy_context()), self.loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise
        except BaseException:
            future.cancel()  # KeyboardInterrupt while waiting: stop the work too
            raise

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the loop (cancelling what still runs on it) and join the thread."""
        if self._stopped:
            return
        self._stopped = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)


async def _in_context(coro: Coroutine[Any, Any, T], context: contextvars.Context) -> T:
    """Await ``coro`` as a task running in ``context`` (cancelling this cancels it)."""
    return await asyncio.get_running_loop().create_task(coro, context=context)


async def _next_of(iterator: AsyncIterator[T]) -> T | _End:
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return _END


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


class Results:
    """A results subscription (see :class:`~natriton_client.aio.AsyncResults`), blocking: iterate it
    (``for reply in results``) or call :meth:`next`; close it (``with``) to unsubscribe."""

    def __init__(self, results: AsyncResults, runner: _LoopThread) -> None:
        self._results = results
        self._runner = runner
        self.subject = results.subject
        """The subject subscribed to (pass it as ``results_to=``)."""

    def next(self, timeout_s: float | None = None) -> Reply:
        """The next answer (``InferResponse`` or ``ErrorReply``); built-in ``TimeoutError`` after ``timeout_s``
        (``None``: wait for ever); ``ConnectionFailed`` once closed."""
        return self._runner.run(self._results.next(timeout_s))

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Reply:
        reply = self._runner.run(self._results.next_or_none(None)) if not self._runner.stopped else None
        if reply is None:
            raise StopIteration
        return reply

    @property
    def pending(self) -> int:
        """Answers received and not read yet."""
        return self._results.pending

    def close(self) -> None:
        """Unsubscribe. Safe to call more than once."""
        if not self._runner.stopped:
            self._runner.run(self._results.close())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Client:
    """The blocking client. Make one with :meth:`connect`; every method is :class:`AsyncClient`'s, without
    ``await`` (see there for the arguments). Raises the same :mod:`natriton_client.errors` exceptions."""

    def __init__(self, client: AsyncClient, runner: _LoopThread) -> None:
        self.aio = client
        """The :class:`AsyncClient` underneath (it lives on the background loop: do not await it elsewhere)."""
        self._runner = runner

    @classmethod
    def connect(
        cls,
        servers: str | Sequence[str] = DEFAULT_URL,
        *,
        name: str = "natriton-client",
        connect_timeout_s: float = 5.0,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        reply_grace_s: float = 1.0,
        propagate_trace: bool = True,
        **nats_options: Any,
    ) -> Client:
        """Connect to NATS at ``servers`` (a URL or a list of them); ``ConnectionFailed`` when none answers.

        ``nats_options`` also take :meth:`AsyncClient.connect`'s ``creds_file``, ``nkey_seed_file``, ``tls_ca_file``,
        ``tls_cert_file``, ``tls_key_file`` and ``inbox_prefix`` (a locked-down mesh)."""
        runner = _LoopThread(f"natriton-client-{name}")
        try:
            client = runner.run(
                AsyncClient.connect(
                    servers,
                    name=name,
                    connect_timeout_s=connect_timeout_s,
                    timeout_s=timeout_s,
                    retry=retry,
                    reply_grace_s=reply_grace_s,
                    propagate_trace=propagate_trace,
                    **nats_options,
                )
            )
        except BaseException:
            runner.stop()
            raise
        return cls(client, runner)

    def infer(
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
        """See :meth:`AsyncClient.infer`."""
        return self._runner.run(
            self.aio.infer(
                model,
                image=image,
                tensors=tensors,
                text=text,
                audio=audio,
                version=version,
                top_k=top_k,
                use_cache=use_cache,
                timeout_s=timeout_s,
                deadline_ms=deadline_ms,
                request_id=request_id,
                json=json,
                traceparent=traceparent,
                retry=retry,
                extra_headers=extra_headers,
            )
        )

    def infer_request(
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
        """See :meth:`AsyncClient.infer_request`."""
        return self._runner.run(
            self.aio.infer_request(
                request,
                timeout_s=timeout_s,
                deadline_ms=deadline_ms,
                request_id=request_id,
                json=json,
                traceparent=traceparent,
                retry=retry,
                extra_headers=extra_headers,
            )
        )

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
    ) -> Iterator[InferResponse]: ...

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
    ) -> Iterator[InferResponse | NatritonError]: ...

    def infer_many(
        self,
        requests: Iterable[InferCall | InferRequest],
        *,
        concurrency: int = 8,
        ordered: bool = True,
        return_exceptions: bool = False,
        timeout_s: float | None = None,
        json: bool = False,
        retry: RetryPolicy | None = None,
    ) -> Iterator[InferResponse | NatritonError]:
        """See :meth:`AsyncClient.infer_many` (``requests`` is read on the client's thread; close the iterator,
        or exhaust it, to cancel what is still in flight)."""
        return self._drive(
            self.aio.infer_many(
                requests,
                concurrency=concurrency,
                ordered=ordered,
                return_exceptions=return_exceptions,
                timeout_s=timeout_s,
                json=json,
                retry=retry,
            )
        )

    def _drive(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                item = self._runner.run(_next_of(iterator))
                if isinstance(item, _End):
                    return
                yield item
        finally:
            if not self._runner.stopped:
                self._runner.run(_aclose(iterator))

    def publish(
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
        """See :meth:`AsyncClient.publish`; returns the request id."""
        return self._runner.run(
            self.aio.publish(
                model,
                image=image,
                tensors=tensors,
                text=text,
                audio=audio,
                version=version,
                top_k=top_k,
                use_cache=use_cache,
                results_to=results_to,
                request_id=request_id,
                timeout_s=timeout_s,
                deadline_ms=deadline_ms,
                json=json,
                traceparent=traceparent,
                extra_headers=extra_headers,
            )
        )

    def publish_request(
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
        """See :meth:`AsyncClient.publish_request`; returns the request id."""
        return self._runner.run(
            self.aio.publish_request(
                request,
                results_to=results_to,
                request_id=request_id,
                timeout_s=timeout_s,
                deadline_ms=deadline_ms,
                json=json,
                traceparent=traceparent,
                extra_headers=extra_headers,
            )
        )

    def results(self, subject: str | None = None, *, model: str | None = None, queue: str = "") -> Results:
        """See :meth:`AsyncClient.results`."""
        return Results(self._runner.run(self.aio.results(subject, model=model, queue=queue)), self._runner)

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until everything published so far has reached the NATS server."""
        self._runner.run(self.aio.flush(timeout_s))

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`close` was called (or the connection is closed)."""
        return self._runner.stopped or self.aio.is_closed

    def close(self) -> None:
        """Close the client and its connection, then stop the background thread. Safe to call more than once."""
        if self._runner.stopped:
            return
        try:
            self._runner.run(self.aio.close())
        finally:
            self._runner.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
