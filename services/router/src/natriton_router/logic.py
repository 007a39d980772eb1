"""Pure router logic: reading Triton's model descriptions, batching, error mapping."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from natriton.errors import ErrorCode, MeshError
from natriton.messages import ModelInfo, Tensor, TensorSpec
from natriton.tensors import to_array, to_tensor

_GRPC_TO_ERROR = {
    "StatusCode.INVALID_ARGUMENT": ErrorCode.INVALID_ARGUMENT,
    "StatusCode.NOT_FOUND": ErrorCode.NOT_FOUND,
    "StatusCode.DEADLINE_EXCEEDED": ErrorCode.DEADLINE_EXCEEDED,
    "StatusCode.UNAVAILABLE": ErrorCode.UNAVAILABLE,
    "StatusCode.RESOURCE_EXHAUSTED": ErrorCode.OVERLOADED,
    "StatusCode.CANCELLED": ErrorCode.UNAVAILABLE,
}


def error_from_triton(status: str | None, message: str) -> MeshError:
    """Map a Triton/gRPC status (``StatusCode.X``) to a typed mesh error."""
    code = _GRPC_TO_ERROR.get(status or "", ErrorCode.INTERNAL)
    retry = 1000 if code in (ErrorCode.UNAVAILABLE, ErrorCode.OVERLOADED) else None
    return MeshError(code, f"triton: {message}", retry_after_ms=retry)


def _specs(entries: Sequence[dict[str, Any]]) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(
            name=str(e["name"]),
            datatype=str(e["data_type"]).removeprefix("TYPE_"),
            shape=tuple(int(d) for d in e.get("dims", [])),
        )
        for e in entries
    )


def model_info_from_triton(config: dict[str, Any], versions: Sequence[str]) -> ModelInfo:
    """Build a catalog entry from Triton's model config (JSON form) and its ready versions."""
    parameters = {str(k): str(v.get("string_value", "")) for k, v in config.get("parameters", {}).items()}
    return ModelInfo(
        name=str(config["name"]),
        versions=tuple(sorted(versions, key=lambda v: (len(v), v))),
        task=parameters.get("natriton.task", "raw"),
        max_batch_size=int(config.get("max_batch_size", 0)),
        inputs=_specs(config.get("input", [])),
        outputs=_specs(config.get("output", [])),
        parameters=parameters,
    )


@dataclass(slots=True)
class BatchItem:
    """One request waiting for inference."""

    inputs: tuple[Tensor, ...]
    size: int
    deadline_ms: float | None
    future: asyncio.Future[tuple[Tensor, ...]]
    enqueued: float = field(default_factory=time.perf_counter)


Executor = Callable[[dict[str, np.ndarray[Any, Any]]], Awaitable[dict[str, np.ndarray[Any, Any]]]]


class ModelBatcher:
    """Forms batches for one model version and runs them through ``execute``.

    A batch leaves when an execution slot is free: it takes everything queued (up to the model's
    max batch size), waiting at most ``max_wait_s`` for more. While every slot is busy, requests
    queue up and form the next, larger batch — so batches grow with load and low load pays no wait.
    """

    def __init__(
        self,
        execute: Executor,
        *,
        max_batch_size: int,
        max_wait_s: float,
        slots: int,
        output_names: Sequence[str],
    ) -> None:
        self._execute = execute
        self._max = max(1, max_batch_size)
        self._max_wait_s = max_wait_s
        self._slots = asyncio.Semaphore(slots)
        self._output_names = tuple(output_names)
        self._queue: asyncio.Queue[BatchItem] = asyncio.Queue()
        self._held: BatchItem | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self.batch_sizes: Counter[int] = Counter()
        self.expired = 0

    async def submit(self, inputs: tuple[Tensor, ...], deadline_ms: float | None) -> tuple[Tensor, ...]:
        """Queue one request (batch dimension first) and wait for its outputs."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        size = inputs[0].shape[0]
        future: asyncio.Future[tuple[Tensor, ...]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(BatchItem(inputs=inputs, size=size, deadline_ms=deadline_ms, future=future))
        return await future

    @property
    def queued(self) -> int:
        """Requests waiting for a batch."""
        return self._queue.qsize() + (1 if self._held else 0)

    async def close(self) -> None:
        """Stop forming batches (running ones finish)."""
        if self._task is not None:
            self._task.cancel()
        if self._running:
            await asyncio.wait(self._running)

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
            batch, total = [first], first.size
            wait_until = time.perf_counter() + self._max_wait_s
            while total < self._max:
                item = await self._next_item(wait_until - time.perf_counter())
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

    async def _run(self, batch: list[BatchItem]) -> None:
        try:
            now_ms = time.time() * 1000
            live = []
            for item in batch:
                if item.deadline_ms is not None and item.deadline_ms <= now_ms:
                    self.expired += 1
                    if not item.future.done():
                        item.future.set_exception(
                            MeshError(ErrorCode.DEADLINE_EXCEEDED, "deadline passed while queued for a batch")
                        )
                else:
                    live.append(item)
            if not live:
                return
            self.batch_sizes[sum(i.size for i in live)] += 1
            try:
                outputs = await self._execute(concat_inputs([i.inputs for i in live]))
                split = split_outputs(outputs, [i.size for i in live], self._output_names)
            except MeshError as exc:
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                return
            except Exception as exc:  # a bug or an unexpected client error: fail the batch, keep serving
                error = MeshError(ErrorCode.INTERNAL, f"inference failed: {type(exc).__name__}")
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(error)
                return
            for item, result in zip(live, split, strict=True):
                if not item.future.done():
                    item.future.set_result(result)
        finally:
            self._slots.release()


def _shape_key(item: BatchItem) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Requests can share a batch only when every input has the same non-batch shape."""
    return tuple((t.name, t.shape[1:]) for t in item.inputs)


def concat_inputs(requests: Sequence[tuple[Tensor, ...]]) -> dict[str, np.ndarray[Any, Any]]:
    """Stack the inputs of several requests along the batch dimension, by input name."""
    names = [t.name for t in requests[0]]
    by_name: dict[str, list[np.ndarray[Any, Any]]] = {n: [] for n in names}
    for tensors in requests:
        for tensor in tensors:
            by_name[tensor.name].append(to_array(tensor))
    return {n: arrays[0] if len(arrays) == 1 else np.concatenate(arrays) for n, arrays in by_name.items()}


def split_outputs(
    outputs: dict[str, np.ndarray[Any, Any]], sizes: Sequence[int], names: Sequence[str]
) -> list[tuple[Tensor, ...]]:
    """Cut batched outputs back into one tuple of tensors per request."""
    result: list[tuple[Tensor, ...]] = []
    start = 0
    for size in sizes:
        result.append(tuple(to_tensor(n, outputs[n][start : start + size]) for n in names))
        start += size
    return result
