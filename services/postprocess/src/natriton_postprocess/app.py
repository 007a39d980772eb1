"""Postprocess wiring: raw outputs → answer → cache → reply to the owning ingest."""

from __future__ import annotations

from natriton import subjects
from natriton.cache import ResultCache
from natriton.catalog import ModelCatalog
from natriton.messages import CacheEntry, Codec, InferResponse, PostprocessTask
from natriton.pipeline import decode_task, reply_to_owner, serve_stage
from natriton.runtime import Inbound, ServiceRuntime
from natriton_postprocess.logic import to_result
from natriton_postprocess.settings import Settings

TASKS: Codec[PostprocessTask] = Codec(PostprocessTask)
CACHE_ENTRIES: Codec[CacheEntry] = Codec(CacheEntry)


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
        job = task.job
        info, _ = self.catalog.require(job.model, job.version)
        result = to_result(info, task.outputs, job)
        if job.cache_key:
            ttl_s = self.settings.cache_ttl_s if info.cache_ttl_s is None else info.cache_ttl_s
            await self.cache.set(
                job.cache_key, CACHE_ENTRIES.encode(CacheEntry(version=job.version, result=result)), ttl_s
            )
        response = InferResponse(
            request_id=envelope.request_id,
            model=job.model,
            version=job.version,
            result=result,
        )
        await reply_to_owner(self.runtime, envelope, response)


async def build_app(runtime: ServiceRuntime, settings: Settings) -> PostprocessApp:
    """Dependencies for one postprocess process."""
    cache = ResultCache(settings.redis_url, ttl_s=settings.cache_ttl_s)
    return PostprocessApp(runtime, settings, ModelCatalog(), cache)
