"""Router wiring: publish the model catalog, batch InferTasks per model, call Triton, hand on outputs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import msgspec
import numpy as np

from natriton import headers, subjects
from natriton.catalog import open_bucket, publish_model
from natriton.errors import ErrorCode, MeshError, invalid_argument
from natriton.messages import Codec, InferTask, ModelInfo, PostprocessTask
from natriton.pipeline import check_deadline, next_hop_headers, serve_stage
from natriton.runtime import Inbound, ServiceRuntime
from natriton.tensors import check_against_specs
from natriton_router.logic import ModelBatcher
from natriton_router.settings import Settings
from natriton_router.triton import TritonGateway

log = logging.getLogger(__name__)
TASKS: Codec[InferTask] = Codec(InferTask)
OUT: Codec[PostprocessTask] = Codec(PostprocessTask)


class RouterApp:
    """Owns the Triton connection, the catalog and one batcher per model version."""

    def __init__(self, runtime: ServiceRuntime, settings: Settings, triton: TritonGateway) -> None:
        self.runtime = runtime
        self.settings = settings
        self.triton = triton
        self.models: dict[str, ModelInfo] = {}
        self.batchers: dict[tuple[str, str], ModelBatcher] = {}
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.triton.wait_ready(self.settings.triton_ready_timeout_s)
        await self.refresh_catalog()
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())
        await serve_stage(self.runtime, "route", subjects.ROUTE, self.handle)

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        for batcher in self.batchers.values():
            await batcher.close()
        await self.triton.close()

    async def refresh_catalog(self) -> None:
        """Read the models from Triton and publish them to the catalog bucket."""
        models = await self.triton.read_catalog()
        kv = await open_bucket(self.runtime.nc, create=True)
        for info in models:
            if self.models.get(info.name) != info:
                await publish_model(kv, info)
                log.info("catalog: %s versions %s task %s", info.name, list(info.versions), info.task)
        self.models = {m.name: m for m in models}

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.catalog_refresh_s)
            try:
                await self.refresh_catalog()
            except Exception as exc:  # Triton briefly away: keep the last catalog
                log.warning("catalog refresh failed: %s", exc)

    def batcher(self, info: ModelInfo, version: str) -> ModelBatcher:
        """The batcher of one model version (created on first use)."""
        key = (info.name, version)
        if key not in self.batchers:
            output_names = tuple(o.name for o in info.outputs)

            async def execute(inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
                return await self.triton.infer(info.name, version, inputs, output_names)

            self.batchers[key] = ModelBatcher(
                execute,
                max_batch_size=info.max_batch_size,
                max_wait_s=self.settings.batch_max_wait_ms / 1000,
                slots=self.settings.batches_in_flight,
                output_names=output_names,
            )
        return self.batchers[key]

    async def handle(self, inbound: Inbound) -> None:
        """InferTask → (batched inference) → PostprocessTask."""
        try:
            task = TASKS.decode(inbound.data)
        except msgspec.MsgspecError as exc:
            raise invalid_argument(f"malformed infer task: {exc}") from exc
        check_deadline(inbound.headers, "routing")
        job = task.job
        info = self.models.get(job.model)
        if info is None or job.version not in info.versions:
            raise MeshError(ErrorCode.NOT_FOUND, f"model {job.model!r} version {job.version!r} is not served")
        check_against_specs(task.inputs, info.inputs, info.name)
        if info.max_batch_size and task.inputs[0].shape[0] > info.max_batch_size:
            raise invalid_argument(f"model {info.name!r} takes at most {info.max_batch_size} items per request")
        deadline = inbound.headers.get(headers.DEADLINE)
        outputs = await self.batcher(info, job.version).submit(task.inputs, float(deadline) if deadline else None)
        out = PostprocessTask(job=job, outputs=outputs)
        await self.runtime.publish(subjects.POSTPROCESS, OUT.encode(out), next_hop_headers(inbound.headers))

    def stats(self) -> dict[str, Any]:
        """Batch-size counts per model version (for STATS and tests)."""
        return {f"{m}:{v}": dict(b.batch_sizes) for (m, v), b in self.batchers.items()}


async def build_app(runtime: ServiceRuntime, settings: Settings) -> RouterApp:
    """Dependencies for one router process."""
    return RouterApp(runtime, settings, TritonGateway(settings.triton_grpc_url, timeout_s=settings.triton_timeout_s))
