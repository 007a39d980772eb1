"""Preprocess wiring: take PreprocessTasks, emit InferTasks to the router."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from natriton import deadletters, subjects
from natriton.audio import model_inputs
from natriton.catalog import ModelCatalog, ModelFiles
from natriton.claimcheck import FrameStore
from natriton.envelope import Envelope
from natriton.errors import MeshError
from natriton.frames import CONSUMER_NAMES, STREAM_NAMES, ensure_results_stream, ensure_streams, frames_subject
from natriton.handoff import Sender
from natriton.messages import (
    AudioInput,
    Codec,
    FrameRef,
    FrameTask,
    ImageInput,
    InferTask,
    Job,
    PreprocessTask,
    StreamMode,
    Tensor,
    TextInput,
)
from natriton.pipeline import decode_task, infer_task, next_hop_headers, reply_error_to_owner, serve_stage
from natriton.profiles import ImageSpec
from natriton.runtime import Inbound, ServiceRuntime
from natriton_client.liveness import HeartbeatWatch
from natriton_preprocess.logic import (
    DecodeLimits,
    check_tensors,
    decode_work,
    image_spec_of,
    prepare_frame,
    prepare_image,
    vad_profile_of,
)
from natriton_preprocess.settings import Settings
from natriton_preprocess.text import text_spec_of, text_to_tensors

TASKS: Codec[PreprocessTask] = Codec(PreprocessTask)
FRAMES: Codec[FrameTask] = Codec(FrameTask)
OUT: Codec[InferTask] = Codec(InferTask)
HANDOFF_GRACE_S = 1.0
"""A slot the router never marked read is taken again this long after its request's deadline."""
T = TypeVar("T")


class PreprocessApp:
    """Decodes inputs into the exact tensors each model declares."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        settings: Settings,
        catalog: ModelCatalog,
        files: ModelFiles,
        frames: FrameStore,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.catalog = catalog
        self.files = files
        self.frames = frames
        self.limits = DecodeLimits(max_pixels=settings.max_image_pixels, min_side=settings.min_image_side)
        self.pool = (
            ThreadPoolExecutor(max_workers=settings.decode_threads, thread_name_prefix="decode")
            if settings.decode_threads > 0
            else None
        )
        self.routers = HeartbeatWatch(
            subjects.heartbeat_subject("router"), on_lost=lambda dead: None, settle_s=settings.heartbeat_dead_after_s
        )
        """Which router copies are alive, and which ``/dev/shm`` each sees."""
        self.handoff = Sender(
            lambda: self.routers.shares_memory("router", self.runtime.shm_domain), settings.handoff_min_bytes
        )
        """Decoded tensors on their way to the router, through this copy's shared memory (decision 0011): a slot
        is free again once the router has read it, or once the request's deadline has passed."""

    async def start(self) -> None:
        self.handoff.open(self.runtime.micro.id, self.runtime.shm_domain, self.settings.handoff_max_bytes)
        await self.routers.start(self.runtime.nc)
        self.runtime.stats_extension = lambda: {"handoff": self.handoff.stats()}
        self.runtime.metrics_extension = lambda: self.handoff.metrics("preprocess")
        await self.catalog.start(self.runtime.nc)
        await serve_stage(self.runtime, "preprocess", subjects.PREPROCESS, self.handle)
        await serve_stage(self.runtime, "preprocess_stored", subjects.PREPROCESS_STORED, self.handle_frame)
        js = self.runtime.nc.jetstream()
        replicas = self.settings.stream_replicas
        await ensure_streams(js, replicas)
        await ensure_results_stream(js, replicas)
        await deadletters.ensure_dead_letter_stream(js, replicas, self.settings.dead_letter_max_age_s)
        reliable = STREAM_NAMES[StreamMode.RELIABLE], CONSUMER_NAMES[StreamMode.RELIABLE]
        await deadletters.serve_max_deliveries(self.runtime, *reliable)  # before frames flow: none is missed
        for mode in StreamMode:
            max_deliver = 1 if mode is StreamMode.REALTIME else self.settings.reliable_max_deliver
            ack_wait_s = self.settings.frame_ack_wait_s
            await update_consumer(js, STREAM_NAMES[mode], CONSUMER_NAMES[mode], ack_wait_s, max_deliver)
            await self.runtime.add_stream_endpoint(
                f"frames_{mode.value}",
                STREAM_NAMES[mode],
                frames_subject(mode, "*"),
                self.handle_frame,
                durable=CONSUMER_NAMES[mode],
                on_error=self.frame_error,
                ack_wait_s=ack_wait_s,
                max_deliver=max_deliver,
                max_ack_pending=self.settings.frames_in_flight,
            )

    async def stop(self) -> None:
        await self.routers.stop()
        self.handoff.close()
        await self.catalog.stop()
        await self.frames.close()
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    async def offload(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a decode thread, or right here on the event loop when there are none."""
        if self.pool is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def decodes_inline(self, data: bytes) -> bool:
        """Whether an encoded image is small enough to decode on the event loop (see
        ``Settings.inline_decode_max_pixels``); one whose header says nothing goes to a thread."""
        work = decode_work(data)
        return work is not None and work <= self.settings.inline_decode_max_pixels

    async def image_tensor(self, data: bytes, layout: ImageSpec) -> tuple[Tensor, tuple[int, int]]:
        """An encoded image → (the model's input tensor, the image's size): small ones on the loop."""
        if self.decodes_inline(data):
            return prepare_image(data, layout, self.limits)
        return await self.offload(prepare_image, data, layout, self.limits)

    async def frame_tensor(self, data: bytes, frame: FrameRef, layout: ImageSpec) -> tuple[Tensor, tuple[int, int]]:
        """A stored frame → (the model's input tensor, the frame's size): small ones on the loop."""
        if frame.encoding == "rgb24":  # no decoding, a resize: its cost is about a baseline JPEG's of that size
            inline = frame.width * frame.height <= self.settings.inline_decode_max_pixels
        else:
            inline = self.decodes_inline(data)
        if inline:
            return prepare_frame(data, frame, layout, self.limits)
        return await self.offload(prepare_frame, data, frame, layout, self.limits)

    async def handle(self, inbound: Inbound) -> None:
        """PreprocessTask → InferTask."""
        task, envelope = decode_task(TASKS, inbound)
        envelope.check_deadline("preprocess")
        info, _ = self.catalog.require(task.job.model, task.job.version)
        job = task.job
        if isinstance(task.input, ImageInput):
            layout = image_spec_of(info)
            tensor, (width, height) = await self.image_tensor(task.input.data, layout)
            inputs: tuple[Tensor, ...] = (tensor,)
            job = msgspec.structs.replace(job, source_width=width, source_height=height)
        elif isinstance(task.input, AudioInput):
            profile = vad_profile_of(info)
            convert = functools.partial(
                model_inputs,
                max_bytes=self.settings.max_audio_bytes,
                max_duration_s=self.settings.max_audio_duration_s,
            )
            inputs, samples = await self.offload(convert, task.input, profile)
            job = msgspec.structs.replace(job, audio_samples=samples)
        elif isinstance(task.input, TextInput):
            spec = text_spec_of(info)
            tokenizer = await self.files.get(spec.tokenizer_file, spec.tokenizer_sha256)
            inputs = await self.offload(text_to_tensors, task.input.text, spec, tokenizer)
        else:
            inputs = check_tensors(task.input.tensors, info)
        self.send_to_router(job, inputs, envelope)

    async def handle_frame(self, inbound: Inbound) -> None:
        """A stored image (a claim check: a camera frame from a frames stream, or a large request's image) →
        InferTask; a frame from a stream stays unacknowledged until the hop that answers its owner acknowledges it."""
        task, envelope = decode_task(FRAMES, inbound)
        envelope.check_deadline("preprocess")
        info, _ = self.catalog.require(task.job.model, task.job.version)
        layout = image_spec_of(info)
        data = await self.frames.get(task.frame.key)
        tensor, (width, height) = await self.frame_tensor(data, task.frame, layout)
        job = msgspec.structs.replace(task.job, source_width=width, source_height=height)
        self.send_to_router(job, (tensor,), envelope)

    def send_to_router(self, job: Job, inputs: tuple[Tensor, ...], envelope: Envelope) -> None:
        """The router's task, packed with this turn's others; large inputs wait in shared memory until the router
        has read them (or the deadline has passed, and a little more)."""
        expires_s = time.monotonic() + envelope.remaining_s() + HANDOFF_GRACE_S
        slot = self.handoff.offer([t.data for t in inputs], expires_s=expires_s)
        out = infer_task(job, inputs, slot)
        self.runtime.publish_soon(subjects.ROUTE, OUT.encode(out), next_hop_headers(envelope))

    async def frame_error(self, inbound: Inbound, error: MeshError) -> None:
        """A frame that cannot be analysed is answered with the typed error and settled: a permanent error puts it
        in dead letters, a transient one has it delivered again (:func:`natriton.deadletters.settle_failure`)."""
        await reply_error_to_owner(self.runtime, inbound, error)


async def update_consumer(js: JetStreamContext, stream: str, durable: str, ack_wait_s: float, max_deliver: int) -> None:
    """Bring an existing durable consumer's ``ack_wait`` and ``max_deliver`` to the settings (binding to it does
    not: a consumer made by an older version would keep delivering forever)."""
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:
        return  # add_stream_endpoint creates it
    config = info.config
    if config.max_deliver == max_deliver and config.ack_wait == ack_wait_s:
        return
    await js.add_consumer(stream, dataclasses.replace(config, ack_wait=ack_wait_s, max_deliver=max_deliver))


async def build_app(runtime: ServiceRuntime, settings: Settings) -> PreprocessApp:
    """Dependencies for one preprocess process."""
    return PreprocessApp(runtime, settings, ModelCatalog(), ModelFiles(runtime.nc), FrameStore(settings.redis_url))
