"""Per-model-version batching with admission limits and batch tracing.

A batch leaves when an execution slot is free: it takes what is queued (up to the model's max batch
size and only requests of the same shape), waiting at most ``max_wait_s`` for more (no waiting once the
batch has a preferred size). While every slot is
busy, requests queue up and form the next, larger batch — batches grow with load, low load pays no wait.
When several slots are free at once (and batches do not wait to fill), what is queued is shared out among them: two
requests that arrived together run as two batches of one on two model instances, not as one batch of two on one
instance while the other idles.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, Tracer

from natriton.errors import ErrorCode, MeshError
from natriton.messages import Tensor
from natriton.tensors import to_array, to_tensor

Arrays = dict[str, np.ndarray[Any, Any]]
Executor = Callable[[Arrays, float | None], Awaitable[Arrays]]
"""Runs one batch: (inputs by name, earliest member deadline in epoch ms) → outputs by name."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One request's outputs and what happened to it on the way (for its own trace)."""

    outputs: tuple[Tensor, ...]
    enqueued_ns: int
    started_ns: int
    finished_ns: int
    batch_size: int
    batch_span: SpanContext | None


@dataclass(slots=True)
class BatchItem:
    """One request waiting for inference."""

    inputs: tuple[Tensor, ...]
    size: int
    deadline_ms: float | None
    future: asyncio.Future[BatchResult]
    span: SpanContext | None = None
    enqueued_ns: int = field(default_factory=time.time_ns)


@dataclass(frozen=True, slots=True)
class Limits:
    """Admission limits of one batcher; requests over them are refused with ``overloaded`` at once."""

    max_queued: int = 512
    """Requests waiting for a batch."""
    max_in_flight: int = 1024
    """Requests waiting plus executing."""


class ModelBatcher:
    """Forms batches for one model version and runs them through ``execute``."""

    def __init__(
        self,
        execute: Executor,
        *,
        max_batch_size: int,
        max_wait_s: float,
        slots: int,
        output_names: Sequence[str],
        limits: Limits = Limits(),
        tracer: Tracer | None = None,
        name: str = "",
        preferred_sizes: Sequence[int] = (),
    ) -> None:
        self._execute = execute
        self._max = max(1, max_batch_size)
        self._max_wait_s = max_wait_s
        self._slots = asyncio.Semaphore(slots)
        self._free_slots = slots
        self._output_names = tuple(output_names)
        self._limits = limits
        self._tracer = tracer
        self._name = name
        self._preferred = frozenset(preferred_sizes)
        self._queue: asyncio.Queue[BatchItem] = asyncio.Queue()
        self._held: BatchItem | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._batch_ms_ewma = 0.0
        self.batch_sizes: Counter[int] = Counter()
        self.queue_wait_ms: Counter[int] = Counter()
        """Histogram of queue waits, bucketed by powers of two (key = upper bound in ms)."""
        self.expired = 0
        self.rejected = 0

    @property
    def queued(self) -> int:
        """Requests waiting for a batch."""
        return self._queue.qsize() + (1 if self._held else 0)

    @property
    def in_flight(self) -> int:
        """Requests waiting or executing."""
        return self._in_flight

    def retry_after_ms(self) -> int:
        """A hint for refused callers: roughly when the current backlog will have drained."""
        batches = math.ceil(self.queued / self._max) + 1
        return max(10, int(batches * (self._batch_ms_ewma or 10.0)))

    async def submit(
        self, inputs: tuple[Tensor, ...], deadline_ms: float | None, span: SpanContext | None = None
    ) -> BatchResult:
        """Queue one request (batch dimension first) and wait for its outputs; ``overloaded`` over the limits."""
        if self.queued >= self._limits.max_queued or self._in_flight >= self._limits.max_in_flight:
            self.rejected += 1
            raise MeshError(
                ErrorCode.OVERLOADED,
                f"{self._name or 'model'}: {self.queued} queued, {self._in_flight} in flight (limits "
                f"{self._limits.max_queued}/{self._limits.max_in_flight})",
                retry_after_ms=self.retry_after_ms(),
            )
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        size = inputs[0].shape[0]
        self._in_flight += 1
        try:
            self._queue.put_nowait(
                BatchItem(inputs=inputs, size=size, deadline_ms=deadline_ms, future=future, span=span)
            )
            return await future
        finally:
            self._in_flight -= 1

    async def close(self) -> None:
        """Stop forming batches (running ones finish)."""
        if self._task is not None:
            self._task.cancel()
        if self._running:
            await asyncio.wait(self._running)

    def stats(self) -> dict[str, Any]:
        """Numbers for ``$SRV.STATS``: batch-size and queue-wait histograms, limits hit."""
        return {
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "queue_wait_ms": {f"<={k}": v for k, v in sorted(self.queue_wait_ms.items())},
            "queued": self.queued,
            "in_flight": self._in_flight,
            "expired": self.expired,
            "rejected": self.rejected,
        }

    async def _next_item(self, wait_s: float | None) -> BatchItem | None:
        if self._held is not None:
            item, self._held = self._held, None
            return item
        if wait_s is None:
            return await self._queue.get()
        if not self._queue.empty():
            return self._queue.get_nowait()
        if wait_s <= 0:
            return None
        try:
            async with asyncio.timeout(wait_s):
                return await self._queue.get()
        except TimeoutError:
            return None

    async def _loop(self) -> None:
        while True:
            await self._slots.acquire()
            first = await self._next_item(None)
            assert first is not None
            self._free_slots -= 1
            batch, total = [first], first.size
            share = self._share()
            wait_until = time.perf_counter() + self._max_wait_s
            while total < self._max and len(batch) < share:
                # a preferred size is worth sending now rather than waiting for more (Triton's semantics)
                wait_s = 0.0 if total in self._preferred else wait_until - time.perf_counter()
                item = await self._next_item(wait_s)
                if item is None:
                    break
                if total + item.size > self._max or _shape_key(item) != _shape_key(first):
                    self._held = item  # starts the next batch
                    break
                batch.append(item)
                total += item.size
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _share(self) -> int:
        """The most requests the batch just started (its first taken) may hold: no limit but the max batch size
        while it is the only free slot, or when batches wait to fill (``max_wait_s``); while other slots are free
        too, its even share of the requests queued now (the batches of the other slots leave in the same turn)."""
        if not self._free_slots or self._max_wait_s > 0:
            return self._max
        queued = 1 + self._queue.qsize() + (1 if self._held is not None else 0)
        return math.ceil(queued / (self._free_slots + 1))

    async def _run(self, batch: list[BatchItem]) -> None:
        try:
            live = self._drop_expired(batch)
            if not live:
                return
            size = sum(i.size for i in live)
            self.batch_sizes[size] += 1
            started = time.time_ns()
            for item in live:
                wait_ms = (started - item.enqueued_ns) / 1e6
                self.queue_wait_ms[1 << max(0, math.ceil(math.log2(max(wait_ms, 1.0))))] += 1
            deadlines = [i.deadline_ms for i in live if i.deadline_ms is not None]
            links = [Link(i.span) for i in live if i.span is not None and i.span.is_valid]
            span_context: SpanContext | None = None
            try:
                if self._tracer is not None:
                    # the batch is its own trace, linked to every member request (not nested under one)
                    with self._tracer.start_as_current_span(
                        f"batch {self._name}", context=trace.set_span_in_context(trace.INVALID_SPAN), links=links
                    ) as span:
                        span.set_attribute("natriton.batch.size", size)
                        span.set_attribute("natriton.batch.requests", len(live))
                        span_context = span.get_span_context()
                        outputs = await self._execute(
                            concat_inputs([i.inputs for i in live]), min(deadlines, default=None)
                        )
                else:
                    outputs = await self._execute(concat_inputs([i.inputs for i in live]), min(deadlines, default=None))
                split = split_outputs(outputs, [i.size for i in live], self._output_names)
            except MeshError as exc:
                self._fail(live, exc)
                return
            except Exception as exc:  # a bug or an unexpected client error: fail the batch, keep serving
                self._fail(live, MeshError(ErrorCode.INTERNAL, f"inference failed: {type(exc).__name__}"))
                return
            finished = time.time_ns()
            elapsed_ms = (finished - started) / 1e6
            self._batch_ms_ewma = (
                elapsed_ms if not self._batch_ms_ewma else 0.8 * self._batch_ms_ewma + 0.2 * elapsed_ms
            )
            for item, outputs_of_item in zip(live, split, strict=True):
                if not item.future.done():
                    item.future.set_result(
                        BatchResult(
                            outputs=outputs_of_item,
                            enqueued_ns=item.enqueued_ns,
                            started_ns=started,
                            finished_ns=finished,
                            batch_size=size,
                            batch_span=span_context,
                        )
                    )
        finally:
            self._free_slots += 1
            self._slots.release()

    def _drop_expired(self, batch: list[BatchItem]) -> list[BatchItem]:
        now_ms = time.time() * 1000
        live = []
        for item in batch:
            if item.future.done():  # the caller gave up (cancelled)
                continue
            if item.deadline_ms is not None and item.deadline_ms <= now_ms:
                self.expired += 1
                item.future.set_exception(
                    MeshError(ErrorCode.DEADLINE_EXCEEDED, "deadline passed while queued for a batch")
                )
            else:
                live.append(item)
        return live

    @staticmethod
    def _fail(items: list[BatchItem], error: MeshError) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(error)


def _shape_key(item: BatchItem) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Requests can share a batch only when every input has the same non-batch shape."""
    return tuple((t.name, t.shape[1:]) for t in item.inputs)


def concat_inputs(requests: Sequence[tuple[Tensor, ...]]) -> Arrays:
    """Stack the inputs of several requests along the batch dimension, by input name."""
    names = [t.name for t in requests[0]]
    by_name: dict[str, list[np.ndarray[Any, Any]]] = {n: [] for n in names}
    for tensors in requests:
        for tensor in tensors:
            by_name[tensor.name].append(to_array(tensor))
    return {n: arrays[0] if len(arrays) == 1 else np.concatenate(arrays) for n, arrays in by_name.items()}


def split_outputs(outputs: Arrays, sizes: Sequence[int], names: Sequence[str]) -> list[tuple[Tensor, ...]]:
    """Cut batched outputs back into one tuple of tensors per request."""
    result: list[tuple[Tensor, ...]] = []
    start = 0
    for size in sizes:
        result.append(tuple(to_tensor(n, outputs[n][start : start + size]) for n in names))
        start += size
    return result
