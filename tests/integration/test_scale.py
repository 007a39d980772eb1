"""Scaling out: several copies of every service on one NATS, as `docker compose up --scale preprocess=4` runs them.

Every service is stateless and serves its subject in a NATS queue group, so copies share the work and each
message is handled by exactly one copy; a copy stopped with SIGTERM drains and loses nothing. The counts come from
each copy's own ``/metrics`` (a port of its own per copy), summed per service.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from natriton.messages import Classification, InferResponse, Reply
from natriton_client.aio import MeshClient
from natriton_dev.mesh import SERVICES, ServiceProcess
from natriton_dev.stack import LocalStack
from tests.integration.conftest import model_repository_of, triton_inference_count

pytestmark = pytest.mark.asyncio(loop_scope="session")
MODEL = "mobilenet_v2"
COPIES = {"ingest": 2, "preprocess": 4, "router": 2, "postprocess": 2}
ENDPOINT = {"ingest": "infer", "preprocess": "preprocess", "router": "route", "postprocess": "postprocess"}
"""The pipeline endpoint of each service (the label ``endpoint`` of its request counters)."""
PHOTOS = ("coffee.jpg", "chelsea.png", "astronaut.jpg", "grace_hopper.jpg")
CAT_CLASSES = range(281, 286)
TIE_CLASSES = {457, 834, 906}  # bow tie, suit, Windsor tie
TIMEOUT_S = 30.0
LATE_REPLIES = "natriton_ingest_late_replies_total"
"""Internal answers ingest got for a request it had already answered (a message handled twice would show here)."""
Scrape = list[tuple[str, dict[str, str], float]]
Counts = dict[str, dict[str, float]]
"""service -> copy name -> counter value."""


@pytest.fixture(scope="module")
def scaled_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack of its own with several copies of every service; Triton serves only mobilenet_v2 (quicker start).
    Every answer is made by postprocess (``NATRITON_ROUTER_ANSWERS=false``), so each request passes all four
    services, as a detector's does."""
    workdir: Path = tmp_path_factory.mktemp("scaled-stack")
    repository = model_repository_of(workdir, MODEL)
    env = {"NATRITON_ROUTER_ANSWERS": "false"}
    with LocalStack(workdir, model_repository=repository, copies=COPIES, service_env=env) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def scaled_client(scaled_stack: LocalStack) -> AsyncIterator[MeshClient]:
    mesh = await MeshClient.connect(scaled_stack.nats_url)
    yield mesh
    await mesh.close()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def expected_top(scaled_client: MeshClient, photos: dict[str, bytes]) -> dict[str, int]:
    """The top class of each photo, one request at a time (with the cache on: this also fills it)."""
    top = {}
    for name in PHOTOS:
        reply = await scaled_client.infer(MODEL, image=photos[name], timeout_s=TIMEOUT_S, request_id=f"ref-{name}")
        top[name] = top_class(reply)
    assert top["coffee.jpg"] == 967  # espresso
    assert top["chelsea.png"] in CAT_CLASSES
    assert top["grace_hopper.jpg"] in TIE_CLASSES
    assert len(set(top.values())) == len(PHOTOS), f"the photos must be told apart by their answers: {top}"
    return top


def top_class(reply: Reply) -> int:
    assert isinstance(reply, InferResponse), reply
    assert isinstance(reply.result, Classification), reply
    return reply.result.classes[0].index


# ---------------------------------------------------------------------------------------------------- metrics
def scrape(base_url: str) -> Scrape:
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def total(samples: Scrape, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for n, sample_labels, v in samples if n == name and labels.items() <= sample_labels.items())


def copies_of(stack: LocalStack, service: str) -> list[ServiceProcess]:
    return [p for p in stack.services if p.service == service]


def read_counts(processes: list[ServiceProcess], name: str, **labels: str) -> Counts:
    """``name`` (on each service's pipeline endpoint, with ``labels``) of every copy in ``processes``."""
    counts: Counts = {}
    for process in processes:
        samples = scrape(process.metrics_url)
        counts.setdefault(process.service, {})[process.name] = total(
            samples, name, endpoint=ENDPOINT[process.service], **labels
        )
    return counts


def delta(after: Counts, before: Counts) -> Counts:
    return {s: {c: v - before[s][c] for c, v in copies.items()} for s, copies in after.items()}


def sums(counts: Counts) -> dict[str, float]:
    return {service: sum(copies.values()) for service, copies in counts.items()}


async def settled_counts(
    processes: list[ServiceProcess], before: Counts, settled: Callable[[dict[str, float]], bool]
) -> Counts:
    """Per-copy ``succeeded`` deltas once their per-service sums are ``settled`` (a hop counts a message when its
    handler returns, just after it forwarded it), or whatever they are after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        moved = delta(await asyncio.to_thread(succeeded, processes), before)
        if settled(sums(moved)) or time.monotonic() > deadline:
            return moved
        await asyncio.sleep(0.1)


def succeeded(processes: list[ServiceProcess]) -> Counts:
    return read_counts(processes, "natriton_requests_total", outcome="succeeded")


def received(processes: list[ServiceProcess]) -> Counts:
    return read_counts(processes, "natriton_requests_received_total")


def ingest_counter(stack: LocalStack, name: str) -> float:
    return sum(total(scrape(p.metrics_url), name) for p in copies_of(stack, "ingest"))


def load_of(process: ServiceProcess) -> tuple[float, float]:
    """(messages taken, messages being handled now) on the pipeline endpoint of one copy, from one scrape."""
    samples = scrape(process.metrics_url)
    endpoint = ENDPOINT[process.service]
    return total(samples, "natriton_requests_received_total", endpoint=endpoint), total(
        samples, "natriton_in_flight", endpoint=endpoint
    )


def readyz(base_url: str) -> bytes:
    with urllib.request.urlopen(f"{base_url}/readyz", timeout=5) as response:
        body: bytes = response.read()
        return body


# ---------------------------------------------------------------------------------------------------- tests
async def test_the_stack_runs_every_copy_on_a_port_of_its_own(scaled_stack: LocalStack) -> None:
    for service in SERVICES:
        assert len(copies_of(scaled_stack, service)) == COPIES[service], service
    assert len(set(scaled_stack.metrics_urls().values())) == sum(COPIES.values())
    for process in scaled_stack.services:
        assert process.is_running, process.name
        assert await asyncio.to_thread(readyz, process.metrics_url) == b"ready\n", process.name


async def test_work_is_spread_over_every_copy_and_adds_up_exactly(
    scaled_stack: LocalStack, scaled_client: MeshClient, photos: dict[str, bytes], expected_top: dict[str, int]
) -> None:
    """200 uncached requests (every hop, once each) and 20 cache hits (ingest only), all at once."""
    n_uncached, n_cached = 200, 20
    processes = list(scaled_stack.services)
    before = await asyncio.to_thread(succeeded, processes)
    before_received = await asyncio.to_thread(received, processes)
    before_triton = await asyncio.to_thread(triton_inference_count, scaled_stack, MODEL)
    before_hits = await asyncio.to_thread(ingest_counter, scaled_stack, "natriton_ingest_cache_hits_total")
    before_coalesced = await asyncio.to_thread(ingest_counter, scaled_stack, "natriton_ingest_coalesced_total")
    before_late = await asyncio.to_thread(ingest_counter, scaled_stack, LATE_REPLIES)

    sent: dict[str, tuple[str, bool]] = {}  # request id -> (photo, use_cache)
    calls = []
    cycle = itertools.cycle(PHOTOS)
    for i in range(n_uncached + n_cached):
        photo, use_cache = next(cycle), i >= n_uncached
        request_id = f"{'hit' if use_cache else 'scale'}-{i}"
        sent[request_id] = (photo, use_cache)
        calls.append(
            scaled_client.infer(
                MODEL, image=photos[photo], use_cache=use_cache, timeout_s=TIMEOUT_S, request_id=request_id
            )
        )
    replies = await asyncio.gather(*calls)

    assert sorted(r.request_id for r in replies) == sorted(sent), "every request gets exactly one answer"
    for reply in replies:
        photo, use_cache = sent[reply.request_id]
        assert top_class(reply) == expected_top[photo], (photo, reply)
        assert isinstance(reply, InferResponse) and reply.cached == use_cache, reply

    # Cache hits are answered by ingest: only the uncached requests pass preprocess, router, postprocess, Triton.
    expected = {
        "ingest": n_uncached + n_cached,
        "preprocess": n_uncached,
        "router": n_uncached,
        "postprocess": n_uncached,
    }
    moved = await settled_counts(processes, before, lambda got: got == expected)
    assert sums(moved) == expected, moved
    moved_received = delta(await asyncio.to_thread(received, processes), before_received)
    assert sums(moved_received) == expected, moved_received  # nothing failed, nothing was taken twice
    for service, copies in moved.items():
        idle = [name for name, n in copies.items() if n < 1]
        assert not idle, f"{service}: copies {idle} took no work: {copies}"
    assert await asyncio.to_thread(triton_inference_count, scaled_stack, MODEL) - before_triton == n_uncached
    hits = await asyncio.to_thread(ingest_counter, scaled_stack, "natriton_ingest_cache_hits_total")
    assert hits - before_hits == n_cached
    coalesced = await asyncio.to_thread(ingest_counter, scaled_stack, "natriton_ingest_coalesced_total")
    assert coalesced == before_coalesced  # use_cache=False neither reads the cache nor joins identical requests
    assert await asyncio.to_thread(ingest_counter, scaled_stack, LATE_REPLIES) == before_late  # no second answers
    assert all(p.is_running for p in scaled_stack.services)


async def test_a_preprocess_copy_stopped_mid_stream_drains_and_loses_nothing(
    scaled_stack: LocalStack, scaled_client: MeshClient, photos: dict[str, bytes], expected_top: dict[str, int]
) -> None:
    """SIGTERM one of the four preprocess copies while it is busy and requests keep coming (graceful scale-down):
    it finishes what it took and exits 0, every request is answered with its right result, and the other three
    take the rest."""
    interval_s, n_before, n_burst, n_after = 0.01, 30, 24, 40
    victim = scaled_stack.service("preprocess", COPIES["preprocess"] - 1)
    survivors = [p for p in scaled_stack.services if p is not victim]
    other_preprocess = [p for p in survivors if p.service == "preprocess"]
    before = await asyncio.to_thread(succeeded, survivors)
    victim_before, _ = await asyncio.to_thread(load_of, victim)
    before_late = await asyncio.to_thread(ingest_counter, scaled_stack, LATE_REPLIES)

    sent: dict[str, str] = {}  # request id -> photo
    tasks: list[asyncio.Future[Reply]] = []
    cycle = itertools.cycle(PHOTOS)
    phase = "before"  # the victim's state when the request was sent: before SIGTERM, during its drain, after its exit
    n_sent_after = 0
    under_way = asyncio.Event()

    def send() -> None:
        photo, request_id = next(cycle), f"drain-{phase}-{len(tasks)}"
        sent[request_id] = photo
        call = scaled_client.infer(
            MODEL, image=photos[photo], use_cache=False, timeout_s=TIMEOUT_S, request_id=request_id
        )
        tasks.append(asyncio.ensure_future(call))

    async def stream() -> None:
        nonlocal n_sent_after
        while n_sent_after < n_after:
            send()
            n_sent_after += phase == "after"
            if len(tasks) >= n_before:
                under_way.set()
            await asyncio.sleep(interval_s)

    streaming = asyncio.ensure_future(stream())
    try:
        await under_way.wait()
        for _ in range(n_burst):  # a burst on top of the stream: every preprocess copy has work queued
            send()
        deadline = time.monotonic() + 10
        while True:  # stop the victim while it takes part of the stream (the stream goes on after the SIGTERM)
            taken, busy = await asyncio.to_thread(load_of, victim)
            seen = taken - victim_before
            # photos decode on the event loop (NATRITON_INLINE_DECODE_MAX_PIXELS), so a handler seldom yields while
            # a scrape is answered: a copy that has taken part of the stream counts as under way
            if busy >= 1 or seen >= 1 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        assert seen >= 1, "the copy to be stopped never got work"
        phase = "during"
        returncode = await asyncio.to_thread(victim.stop, 20.0)  # SIGTERM, then wait for the exit
        after_exit = await asyncio.to_thread(succeeded, other_preprocess)
        phase = "after"
        await streaming
        replies = await asyncio.gather(*tasks)

        assert returncode == 0, f"{victim.name} should exit cleanly after draining:\n{victim.log_tail()}"
        log = victim.log_since_start()
        assert "preprocess draining" in log and "preprocess stopped" in log, log[-2000:]
        assert "still running after drain timeout" not in log
        assert sorted(r.request_id for r in replies) == sorted(sent), "every request gets exactly one answer"
        for reply in replies:
            assert top_class(reply) == expected_top[sent[reply.request_id]], reply
            assert isinstance(reply, InferResponse) and not reply.cached, reply

        n = len(sent)
        exact = {"ingest": n, "router": n, "postprocess": n}  # no copy of these stopped: every request, once

        def settled(got: dict[str, float]) -> bool:
            return {s: got[s] for s in exact} == exact

        moved = await settled_counts(survivors, before, settled)
        assert settled(sums(moved)), moved
        by_victim = n - sums(moved)["preprocess"]  # every request passed preprocess once: the rest was the victim's
        assert await asyncio.to_thread(ingest_counter, scaled_stack, LATE_REPLIES) == before_late
        assert seen <= by_victim, f"the victim took {seen} requests, but the others handled {n - by_victim} of {n}"
        idle = [name for name, count in moved["preprocess"].items() if count < 1]
        assert not idle, f"preprocess copies {idle} took no work: {moved['preprocess']}"
        tail = delta(await asyncio.to_thread(succeeded, other_preprocess), after_exit)
        assert sums(tail)["preprocess"] >= n_after, tail  # what came after the exit went to the other three
        for process in survivors:
            assert process.is_running, process.name
    finally:
        streaming.cancel()
        for task in tasks:
            task.cancel()
        if not victim.is_running:  # the module's stack gets its fourth copy back
            victim.start()
            await asyncio.to_thread(victim.wait_ready, 30.0)
