"""Postprocess wiring: raw outputs → answer → cache → reply to the owning ingest."""

from __future__ import annotations

from natriton import subjects
from natriton.cache import ResultCache
from natriton.catalog import ModelCatalog
from natriton.messages import Codec, PostprocessTask
from natriton.pipeline import answer, decode_task, serve_stage
from natriton.runtime import Inbound, ServiceRuntime
from natriton_postprocess.settings import Settings

TASKS: Codec[PostprocessTask] = Codec(PostprocessTask)


class PostprocessApp:
    """Answers requests: labels/scores from logits, cache write, reply."""

    def __init__(self, runtime: ServiceRuntime, settings: Settings, catalog: ModelCatalog, cache: ResultCache) -> None:
        self.runtime = runtime
        self.settings = settings
        self.catalog = catalog
        self.cache = cache

    async def start(self) -> None:
        await self.catalog.start(self.runtime.nc)
        await serve_stage(self.runtime, "postprocess", subjects.POSTPROCESS, self.handle)

    async def stop(self) -> None:
        await self.catalog.stop()
        await self.cache.close()

    async def handle(self, inbound: Inbound) -> None:
        """PostprocessTask → InferResponse (cached under the job's key)."""
        task, envelope = decode_task(TASKS, inbound)
        info, _ = self.catalog.require(task.job.model, task.job.version)
        await answer(
            self.runtime, self.cache, info, task.job, task.outputs, envelope, cache_ttl_s=self.settings.cache_ttl_s
        )


async def build_app(runtime: ServiceRuntime, settings: Settings) -> PostprocessApp:
    """Dependencies for one postprocess process."""
    cache = ResultCache(settings.redis_url, ttl_s=settings.cache_ttl_s)
    return PostprocessApp(runtime, settings, ModelCatalog(), cache)
