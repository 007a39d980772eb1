"""Router wiring: the model catalog, routing policies, admission control, batching, Triton with retries and a
circuit breaker per model, shadow traffic; then outputs on to postprocess."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from typing import Any

import msgspec
from opentelemetry import trace
from opentelemetry.trace import Link

from natriton import headers, subjects
from natriton.cache import ResultCache
from natriton.catalog import RouteTable, open_bucket, open_model_files, publish_model, publish_model_file
from natriton.envelope import Envelope
from natriton.errors import ErrorCode, MeshError, invalid_argument
from natriton.handoff import SlotReader, StaleHandoffError
from natriton.messages import Codec, InferTask, Job, ModelInfo, PostprocessTask, Tensor
from natriton.metrics import LatencyHistogram, Metric, add_latency, counter, gauge, histogram, sizes_histogram
from natriton.pipeline import answer, decode_task, next_hop_headers, serve_stage
from natriton.profiles import VadProfile
from natriton.runtime import Inbound, ServiceRuntime
from natriton.subjects import MODELS_BUCKET
from natriton.tensors import check_against_specs
from natriton_router.batching import Arrays, BatchResult, Limits, ModelBatcher
from natriton_router.control import ModelControlEndpoint, catalog_keys
from natriton_router.logic import CircuitBreaker, choose_version, outputs_agree, shadow_version_for
from natriton_router.sequences import run_sequence
from natriton_router.settings import Settings
from natriton_router.triton import TritonGateway

log = logging.getLogger(__name__)
TASKS: Codec[InferTask] = Codec(InferTask)
OUT: Codec[PostprocessTask] = Codec(PostprocessTask)
BREAKER_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}
"""``natriton_router_breaker_state``: 0 closed, 1 half-open, 2 open."""
BREAKER_PROBE_PERIOD_S = 0.25
"""How often an open circuit's model is checked for readiness in Triton."""


class RouterApp:
    """Owns the Triton connection, the catalog and routes, and one batcher per model version."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        settings: Settings,
        triton: TritonGateway,
        routes: RouteTable,
        cache: ResultCache,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.triton = triton
        self.routes = routes
        self.cache = cache
        """Where the answers the router makes itself are cached (``Job.router_answers``, decision 0012)."""
        self.models: dict[str, ModelInfo] = {}
        self.batchers: dict[tuple[str, str], ModelBatcher] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.shadow: dict[str, Counter[str]] = {}
        self._shadow_in_flight = 0
        self._rng = random.Random()
        self._refresher: asyncio.Task[None] | None = None
        self._breaker_watch: asyncio.Task[None] | None = None
        self._catalog_lock = asyncio.Lock()
        self._catalog_pruned = False
        self.triton_latency: dict[tuple[str, str], LatencyHistogram] = {}
        self.triton_reachable = True
        """Whether the latest catalog refresh reached Triton (``/readyz``)."""
        self.sequence_steps = 0
        """Steps of stateful models' sequences run (one chunk each)."""
        self.answered = 0
        """Requests the router answered itself (``Job.router_answers``)."""
        self.handoff = SlotReader(runtime.shm_domain)
        """Reads the tensors ingest hands over in its shared memory (decision 0011)."""

    async def start(self) -> None:
        await self.triton.wait_ready(self.settings.triton_ready_timeout_s)
        if self.settings.triton_shared_memory == "auto":
            await self.triton.use_shared_memory(self.runtime.instance_id)
        await self.refresh_catalog()
        await self.routes.start(self.runtime.nc)
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())
        self._breaker_watch = asyncio.get_running_loop().create_task(self._watch_open_breakers())
        self.runtime.stats_extension = self.stats
        self.runtime.metrics_extension = self.metrics
        self.runtime.readiness_checks.append(self.not_ready_reason)
        await serve_stage(self.runtime, "route", subjects.ROUTE, self.handle)
        await ModelControlEndpoint(self.runtime, self.triton, self.refresh_catalog, self.ready_versions).start()

    async def stop(self) -> None:
        for task in (self._refresher, self._breaker_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.routes.stop()
        for batcher in self.batchers.values():
            await batcher.close()
        await self.triton.close()
        await self.cache.close()
        self.handoff.close()

    # ------------------------------------------------------------------ catalog
    async def refresh_catalog(self) -> None:
        """Read the models from Triton, publish changed ones (and the files they need) to the catalog and delete
        the entries of models no longer ready (unloaded, removed)."""
        async with self._catalog_lock:
            await self._refresh_catalog()

    def ready_versions(self, model: str) -> tuple[str, ...]:
        """The versions of ``model`` the catalog lists now (empty when it is not there)."""
        info = self.models.get(model)
        return info.versions if info is not None and not info.problem else ()

    async def _refresh_catalog(self) -> None:
        models = await self.triton.read_catalog(self.settings.model_repository)
        kv = await open_bucket(self.runtime.nc, MODELS_BUCKET, create=True)
        current = {m.name for m, _ in models}
        gone = set(self.models) - current
        if not self._catalog_pruned:  # at start: entries left by models unloaded while no router ran
            gone |= set(await catalog_keys(kv)) - current
        for name in sorted(gone):
            await kv.delete(name)
            log.info("catalog: %s is no longer served; entry deleted", name)
        self._catalog_pruned = True
        for info, files in models:
            if self.models.get(info.name) == info:
                continue
            if files:  # before the entry that names them, so no reader sees a profile without its files
                store = await open_model_files(self.runtime.nc, create=True)
                for file in files:
                    await publish_model_file(store, file)
            await publish_model(kv, info)
            if info.problem:
                log.error("catalog: %s cannot be served: %s", info.name, info.problem)
            else:
                log.info("catalog: %s versions %s kind %s", info.name, list(info.versions), info.task)
        self.models = {m.name: m for m, _ in models}
        self.triton_reachable = True

    async def _refresh_forever(self) -> None:
        while True:
            # while Triton is away, try again every second, so readiness comes back with it
            await asyncio.sleep(self.settings.catalog_refresh_s if self.triton_reachable else 1.0)
            try:
                await self.refresh_catalog()
            except Exception as exc:  # Triton briefly away: keep the last catalog
                self.triton_reachable = False
                log.warning("catalog refresh failed: %s", exc)

    async def _watch_open_breakers(self, period_s: float = BREAKER_PROBE_PERIOD_S) -> None:
        """While a model's circuit is open, ask Triton every ``period_s`` whether the model is ready; once it is,
        the next request probes at once (the circuit closes within about ``period_s`` of Triton being back)."""
        while True:
            await asyncio.sleep(period_s)
            for model, breaker in list(self.breakers.items()):
                if breaker.state == "open" and await self.triton.is_model_ready(model):
                    log.info("%s: ready again in Triton; probing its circuit now", model)
                    breaker.probe_now()

    # ------------------------------------------------------------------ request path
    async def handle(self, inbound: Inbound) -> None:
        """InferTask → version choice → admission → (batched) inference → the answer to the owner
        (``job.router_answers``), else a PostprocessTask."""
        task, envelope = decode_task(TASKS, inbound)
        envelope.check_deadline("routing")
        if task.handoff is not None:
            task = self._from_shared_memory(task)
        job = task.job
        info = self.models.get(job.model)
        if info is None:
            raise MeshError(ErrorCode.NOT_FOUND, f"model {job.model!r} is not served")
        if info.problem:
            raise MeshError(ErrorCode.NOT_FOUND, f"model {job.model!r} cannot be served: {info.problem}")
        policy = self.routes.get(job.model)
        version = job.version or choose_version(info, policy, self._rng)
        if version not in info.versions:
            raise MeshError(ErrorCode.NOT_FOUND, f"model {job.model!r} version {version!r} is not served")
        if isinstance(info.profile, VadProfile):
            await self._handle_sequence(info, version, job, task.inputs, envelope)
            return
        check_against_specs(task.inputs, info.inputs, info.name)
        if info.max_batch_size and task.inputs[0].shape[0] > info.max_batch_size:
            raise invalid_argument(f"model {info.name!r} takes at most {info.max_batch_size} items per request")
        self.breaker(info.name).check(info.name)
        deadline = envelope.deadline_ms
        span = trace.get_current_span()
        span.set_attribute("natriton.model.version", version)
        result = await self.batcher(info, version).submit(task.inputs, deadline, span.get_span_context())
        self._record_spans(result)
        shadow = shadow_version_for(info, policy, version, self._rng)
        if shadow:
            self._mirror(info, shadow, task.inputs, result.outputs, deadline)
        await self._answer_or_pass_on(info, msgspec.structs.replace(job, version=version), result.outputs, envelope)

    async def _answer_or_pass_on(
        self, info: ModelInfo, job: Job, outputs: tuple[Tensor, ...], envelope: Envelope
    ) -> None:
        """The answer to the owner when ingest asked the router for it (one hop fewer), else the outputs to
        postprocess. Either way the batch's other requests publish in this same turn: one NATS message carries
        them all."""
        if job.router_answers:
            self.answered += 1
            await answer(self.runtime, self.cache, info, job, outputs, envelope, cache_ttl_s=self.settings.cache_ttl_s)
            return
        out = PostprocessTask(job=job, outputs=outputs)
        self.runtime.publish_soon(subjects.POSTPROCESS, OUT.encode(out), next_hop_headers(envelope))

    def _from_shared_memory(self, task: InferTask) -> InferTask:
        """The task with its inputs' bytes copied out of the sender's hand-off slot (``unavailable`` when the slot
        is not the request's any more: the sender has its answer or gave up, so nobody waits for this one)."""
        assert task.handoff is not None
        if len(task.handoff.sizes) != len(task.inputs):
            raise invalid_argument("a hand-off names a size for each input")
        try:
            parts = self.handoff.read(task.handoff)
        except StaleHandoffError as exc:
            raise MeshError(ErrorCode.UNAVAILABLE, str(exc)) from exc
        inputs = tuple(msgspec.structs.replace(t, data=data) for t, data in zip(task.inputs, parts, strict=True))
        return msgspec.structs.replace(task, inputs=inputs, handoff=None)

    async def _handle_sequence(
        self, info: ModelInfo, version: str, job: Job, inputs: tuple[Tensor, ...], envelope: Envelope
    ) -> None:
        """A stateful model's request: its chunks one step at a time, the state carried (:mod:`.sequences`)."""
        assert isinstance(info.profile, VadProfile)
        self.breaker(info.name).check(info.name)
        span = trace.get_current_span()
        span.set_attribute("natriton.model.version", version)
        outputs, steps = await run_sequence(
            self.batcher(info, version).submit,
            info.name,
            info.profile,
            inputs,
            envelope.deadline_ms,
            span.get_span_context(),
        )
        span.set_attribute("natriton.sequence.steps", len(steps))
        self.sequence_steps += len(steps)
        await self._answer_or_pass_on(info, msgspec.structs.replace(job, version=version), outputs, envelope)

    def _record_spans(self, result: BatchResult) -> None:
        """This request's own queue wait and its share of the batch's inference, in its own trace (only when that
        trace is recorded: spans of an unsampled trace are never seen)."""
        if not trace.get_current_span().is_recording():
            return
        tracer = self.runtime.tracer
        wait = tracer.start_span("queue wait", start_time=result.enqueued_ns)
        wait.end(end_time=result.started_ns)
        links = [Link(result.batch_span)] if result.batch_span is not None else []
        infer = tracer.start_span("inference", start_time=result.started_ns, links=links)
        infer.set_attribute("natriton.batch.size", result.batch_size)
        infer.end(end_time=result.finished_ns)

    # ------------------------------------------------------------------ shadow traffic
    def _mirror(
        self,
        info: ModelInfo,
        version: str,
        inputs: tuple[Tensor, ...],
        primary: tuple[Tensor, ...],
        deadline: float | None,
    ) -> None:
        counts = self.shadow.setdefault(f"{info.name}:{version}", Counter())
        if self._shadow_in_flight >= self.settings.shadow_max_in_flight:
            counts["skipped"] += 1
            return
        self._shadow_in_flight += 1
        self.runtime.spawn(self._compare(info, version, inputs, primary, deadline, counts))

    async def _compare(
        self,
        info: ModelInfo,
        version: str,
        inputs: tuple[Tensor, ...],
        primary: tuple[Tensor, ...],
        deadline: float | None,
        counts: Counter[str],
    ) -> None:
        """Run the shadow version and count agreement; its answer never reaches the caller."""
        try:
            counts["requests"] += 1
            result = await self.batcher(info, version).submit(inputs, deadline)
            counts["agree" if outputs_agree(info.profile, primary, result.outputs) else "disagree"] += 1
        except MeshError as exc:
            counts[f"error_{exc.code.value}"] += 1
        finally:
            self._shadow_in_flight -= 1

    # ------------------------------------------------------------------ Triton, per model
    def breaker(self, model: str) -> CircuitBreaker:
        """The circuit breaker of one model (created on first use)."""
        if model not in self.breakers:
            self.breakers[model] = CircuitBreaker(self.settings.breaker_threshold, self.settings.breaker_reset_s)
        return self.breakers[model]

    def batcher(self, info: ModelInfo, version: str) -> ModelBatcher:
        """The batcher of one model version (created on first use)."""
        key = (info.name, version)
        if key not in self.batchers:
            output_names = tuple(o.name for o in info.outputs)

            async def execute(inputs: Arrays, deadline_ms: float | None) -> Arrays:
                return await self._infer(info.name, version, inputs, output_names, deadline_ms)

            self.batchers[key] = ModelBatcher(
                execute,
                max_batch_size=info.max_batch_size,
                max_wait_s=self.settings.batch_max_wait_ms / 1000,
                slots=self.settings.batches_in_flight,
                output_names=output_names,
                limits=Limits(self.settings.max_queued_per_model, self.settings.max_in_flight_per_model),
                tracer=self.runtime.tracer,
                name=f"{info.name}:{version}",
                preferred_sizes=info.preferred_batch_sizes,
            )
        return self.batchers[key]

    async def _infer(
        self, model: str, version: str, inputs: Arrays, output_names: tuple[str, ...], deadline_ms: float | None
    ) -> Arrays:
        """One batch through Triton: retries with backoff on transient errors, within the earliest deadline."""
        breaker = self.breaker(model)
        latency = self.triton_latency.get((model, version))
        if latency is None:
            latency = self.triton_latency[(model, version)] = LatencyHistogram()
        delay_s = self.settings.retry_backoff_ms / 1000
        for attempt in range(self.settings.triton_retries + 1):
            try:
                outputs = await self._call_triton(latency, model, version, inputs, output_names)
            except MeshError as exc:
                if exc.code == ErrorCode.DEADLINE_EXCEEDED:
                    breaker.record_failure()  # Triton did not answer in time: its problem, not the request's
                    raise
                if exc.code not in (ErrorCode.UNAVAILABLE, ErrorCode.INTERNAL):
                    breaker.record_success()  # Triton answered (the request was at fault): it is up
                    raise
                breaker.record_failure()
                sleep_s = delay_s * (1 + self._rng.random())
                out_of_time = deadline_ms is not None and headers.now_ms() + sleep_s * 1000 >= deadline_ms
                if attempt == self.settings.triton_retries or out_of_time or breaker.state != "closed":
                    raise
                log.info("%s:%s: %s; retry %d in %.0f ms", model, version, exc.message, attempt + 1, sleep_s * 1000)
                await asyncio.sleep(sleep_s)
                delay_s *= 2
            else:
                breaker.record_success()
                self.triton_reachable = True  # it answered: ready again without waiting for the next refresh
                return outputs
        raise AssertionError("unreachable")

    async def _call_triton(
        self, latency: LatencyHistogram, model: str, version: str, inputs: Arrays, output_names: tuple[str, ...]
    ) -> Arrays:
        started = time.perf_counter_ns()
        try:
            return await self.triton.infer(model, version, inputs, output_names)
        finally:
            latency.observe_ns(time.perf_counter_ns() - started)

    def not_ready_reason(self) -> str:
        """Why this router should get no traffic ('' when it should): Triton unreachable at the latest catalog
        refresh (and not answering since), or every circuit breaker open."""
        if not self.triton_reachable:
            return "Triton unreachable (the latest catalog refresh failed)"
        if self.breakers and all(b.state == "open" for b in self.breakers.values()):
            return "Triton failing: every circuit breaker is open"
        return ""

    def metrics(self) -> list[Metric]:
        """Batching, admission, Triton, breaker and shadow metrics for ``/metrics``, from the numbers kept anyway."""
        mv = ("model", "version")
        queued = gauge("natriton_router_queue_depth", "Requests waiting for a batch.", mv)
        in_flight = gauge("natriton_router_in_flight", "Requests waiting for a batch or executing.", mv)
        sizes = histogram("natriton_router_batch_size", "Items per batch sent to Triton.", mv)
        rejected = counter("natriton_router_rejected", "Requests refused as overloaded (admission limits).", mv)
        expired = counter("natriton_router_expired", "Requests whose deadline passed while queued.", mv)
        for (model, version), batcher in self.batchers.items():
            values = (model, version)
            queued.add_metric(values, batcher.queued)
            in_flight.add_metric(values, batcher.in_flight)
            total = float(sum(size * n for size, n in batcher.batch_sizes.items()))
            sizes.add_metric(list(values), sizes_histogram(batcher.batch_sizes), total)
            rejected.add_metric(values, batcher.rejected)
            expired.add_metric(values, batcher.expired)
        triton = histogram("natriton_triton_call_seconds", "Duration of each Triton inference call (attempt).", mv)
        for values, latency in self.triton_latency.items():
            add_latency(triton, values, latency)
        state = gauge("natriton_router_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open.", ["model"])
        opened = counter("natriton_router_breaker_opened", "Times a model's circuit breaker opened.", ["model"])
        for model, breaker in self.breakers.items():
            state.add_metric([model], BREAKER_STATE_VALUES[breaker.state])
            opened.add_metric([model], breaker.times_opened)
        shadow = counter(
            "natriton_router_shadow",
            "Shadow comparisons by outcome: agree, disagree, skipped, error_<code>.",
            (*mv, "outcome"),
        )
        for key, counts in self.shadow.items():
            model, _, version = key.rpartition(":")
            for outcome, n in sorted(counts.items()):
                if outcome != "requests":
                    shadow.add_metric((model, version, outcome), n)
        reachable = gauge("natriton_router_triton_reachable", "1 when the latest catalog refresh reached Triton.", [])
        reachable.add_metric([], 1 if self.triton_reachable else 0)
        batches = counter(
            "natriton_router_triton_batches",
            "Batches sent to Triton, by how their inputs travelled: shared_memory or grpc.",
            ["via"],
        )
        for via in ("shared_memory", "grpc"):
            batches.add_metric([via], self.triton.batches[via])
        steps = counter(
            "natriton_router_sequence_steps", "Chunks of stateful models' sequences run (one Triton item each).", []
        )
        steps.add_metric([], self.sequence_steps)
        handoff = counter(
            "natriton_router_handoff",
            "Tasks whose tensors came in the sender's shared memory (decision 0011): read, or stale (the slot was "
            "given back first, or is not reachable from here).",
            ["outcome"],
        )
        handoff.add_metric(["read"], self.handoff.read_count)
        handoff.add_metric(["stale"], self.handoff.stale)
        answered = counter(
            "natriton_router_answered",
            "Requests the router answered itself, without the postprocess hop (ingest asked it to: decision 0012).",
            [],
        )
        answered.add_metric([], self.answered)
        return [
            queued, in_flight, sizes, rejected, expired, triton, state, opened, shadow, reachable, batches, steps,
            handoff, answered,
        ]  # fmt: skip

    def stats(self) -> dict[str, Any]:
        """Batching, admission, breaker and shadow numbers for ``$SRV.STATS``."""
        return {
            "batchers": {f"{m}:{v}": b.stats() for (m, v), b in self.batchers.items()},
            "breakers": {
                m: {"state": b.state, "failures": b.failures, "opened": b.times_opened}
                for m, b in self.breakers.items()
            },
            "shadow": {k: dict(c) for k, c in self.shadow.items()},
            "route_revisions": {name: self.routes.revision(name) for name in self.routes.names()},
            "triton_batches": dict(self.triton.batches),
            "shared_memory": self.triton.shared_memory.stats() if self.triton.shared_memory is not None else None,
            "handoff": {"read": self.handoff.read_count, "stale": self.handoff.stale},
        }


async def build_app(runtime: ServiceRuntime, settings: Settings) -> RouterApp:
    """Dependencies for one router process."""
    triton = TritonGateway(
        settings.triton_grpc_url, timeout_s=settings.triton_timeout_s, tls=settings.triton_grpc_tls()
    )
    return RouterApp(
        runtime, settings, triton, RouteTable(), ResultCache(settings.redis_url, ttl_s=settings.cache_ttl_s)
    )
