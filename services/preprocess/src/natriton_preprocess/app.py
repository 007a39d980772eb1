"""Preprocess wiring: take PreprocessTasks, emit InferTasks to the router."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import msgspec

from natriton import subjects
from natriton.catalog import ModelCatalog, ModelFiles
from natriton.messages import Codec, ImageInput, InferTask, PreprocessTask, Tensor, TextInput
from natriton.pipeline import decode_task, next_hop_headers, serve_stage
from natriton.runtime import Inbound, ServiceRuntime
from natriton_preprocess.logic import DecodeLimits, check_tensors, image_spec_of, prepare_image
from natriton_preprocess.settings import Settings
from natriton_preprocess.text import text_spec_of, text_to_tensors

TASKS: Codec[PreprocessTask] = Codec(PreprocessTask)
OUT: Codec[InferTask] = Codec(InferTask)


class PreprocessApp:
    """Decodes inputs into the exact tensors each model declares."""

    def __init__(self, runtime: ServiceRuntime, settings: Settings, catalog: ModelCatalog, files: ModelFiles) -> None:
        self.runtime = runtime
        self.catalog = catalog
        self.files = files
        self.limits = DecodeLimits(max_pixels=settings.max_image_pixels, min_side=settings.min_image_side)
        self.pool = ThreadPoolExecutor(max_workers=settings.decode_threads, thread_name_prefix="decode")

    async def start(self) -> None:
        await self.catalog.start(self.runtime.nc)
        await serve_stage(self.runtime, "preprocess", subjects.PREPROCESS, self.handle)

    async def stop(self) -> None:
        await self.catalog.stop()
        self.pool.shutdown(wait=True)

    async def handle(self, inbound: Inbound) -> None:
        """PreprocessTask → InferTask."""
        task, envelope = decode_task(TASKS, inbound)
        envelope.check_deadline("preprocess")
        info, _ = self.catalog.require(task.job.model, task.job.version)
        job = task.job
        loop = asyncio.get_running_loop()
        if isinstance(task.input, ImageInput):
            layout = image_spec_of(info)
            tensor, (width, height) = await loop.run_in_executor(
                self.pool, prepare_image, task.input.data, layout, self.limits
            )
            inputs: tuple[Tensor, ...] = (tensor,)
            job = msgspec.structs.replace(job, source_width=width, source_height=height)
        elif isinstance(task.input, TextInput):
            spec = text_spec_of(info)
            tokenizer = await self.files.get(spec.tokenizer_file, spec.tokenizer_sha256)
            inputs = await loop.run_in_executor(self.pool, text_to_tensors, task.input.text, spec, tokenizer)
        else:
            inputs = check_tensors(task.input.tensors, info)
        out = InferTask(job=job, inputs=inputs)
        await self.runtime.publish(subjects.ROUTE, OUT.encode(out), next_hop_headers(envelope))


async def build_app(runtime: ServiceRuntime, settings: Settings) -> PreprocessApp:
    """Dependencies for one preprocess process."""
    return PreprocessApp(runtime, settings, ModelCatalog(), ModelFiles(runtime.nc))
