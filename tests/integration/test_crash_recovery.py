"""kill -9 under load: with two copies of every service, a dead copy costs no request.

Each victim is frozen first (SIGSTOP: NATS keeps delivering to it, so it really holds requests), then killed. The
owner of the requests notices the silence (heartbeats) and sends them again: ingest for a pipeline stage, the client
library for an ingest copy. Every request gets exactly one answer, the right one; none fails.

Every answer is made by postprocess here (``NATRITON_ROUTER_ANSWERS=false``, as for a detector), so each of the four
services holds requests under load; ``test_router_answers_need_no_postprocess`` covers the default path.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from natriton_client import AsyncClient, DeadlineExceeded, NatritonError, RetryPolicy, Unavailable
from natriton_client.protocol import Classification, InferResponse
from natriton_dev.mesh import ServiceProcess
from natriton_dev.stack import LocalStack
from tests.integration.conftest import model_repository_of

pytestmark = pytest.mark.asyncio(loop_scope="session")
MODEL = "mobilenet_v2"
COPIES = {"ingest": 2, "preprocess": 2, "router": 2, "postprocess": 2}
PHOTOS = ("coffee.jpg", "grace_hopper.jpg")
RATE_PER_S = 20
TIMEOUT_S = 10.0
SETTLE_S = 2.5
"""ingest's heartbeat watch settles heartbeat_dead_after_s (2 s) after it starts (before it logs "ingest ready");
a little more."""


@pytest.fixture(scope="module")
def crash_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    workdir: Path = tmp_path_factory.mktemp("crash-stack")
    repository = model_repository_of(workdir, MODEL)
    env = {"NATRITON_ROUTER_ANSWERS": "false"}
    with LocalStack(workdir, model_repository=repository, copies=COPIES, service_env=env) as running:
        yield running


@contextlib.asynccontextmanager
async def producer_without_retries(stack: LocalStack) -> AsyncIterator[AsyncClient]:
    """The client library, with retries off: whatever survives a crash survives by the resend alone."""
    client = await AsyncClient.connect(stack.nats_url, timeout_s=TIMEOUT_S, retry=RetryPolicy(max_retries=0))
    try:
        yield client
    finally:
        await client.close()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def producer(crash_stack: LocalStack) -> AsyncIterator[AsyncClient]:
    async with producer_without_retries(crash_stack) as client:
        yield client


def ingest_total(stack: LocalStack, name: str) -> float:
    total = 0.0
    for process in stack.services:
        if process.service != "ingest" or not process.is_running:
            continue
        with urllib.request.urlopen(f"{process.metrics_url}/metrics", timeout=5) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            total += sum(s.value for s in family.samples if s.name == name)
    return total


def top_class(reply: InferResponse) -> int:
    assert isinstance(reply.result, Classification), reply
    return reply.result.classes[0].index


async def freeze_then_kill(stack: LocalStack, service: str, copy: int, frozen_s: float = 0.6) -> None:
    """Freeze one copy (messages pile up in its socket), then kill -9 it with them."""
    process = stack.service(service, copy)
    assert process.pid is not None and process.is_running
    os.kill(process.pid, signal.SIGSTOP)
    await asyncio.sleep(frozen_s)
    os.kill(process.pid, signal.SIGKILL)
    await asyncio.to_thread(process.stop, 5.0)  # reap it


def live_copies_heard(stack: LocalStack, stage: str) -> list[float]:
    """How many live copies of ``stage`` each running ingest copy counts (from their heartbeats)."""
    counts = []
    for process in stack.services:
        if process.service != "ingest" or not process.is_running:
            continue
        with urllib.request.urlopen(f"{process.metrics_url}/metrics", timeout=5) as response:
            text = response.read().decode()
        counts += [
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "natriton_ingest_live_copies" and s.labels.get("stage") == stage
        ] or [0.0]
    return counts


def ready_for_s(process: ServiceProcess) -> float:
    """Seconds since ``process`` logged that it is ready (its heartbeat watch started just before)."""
    for line in reversed(process.log_since_start().splitlines()):
        if line.startswith("{") and f'"{process.service} ready"' in line:
            logged = datetime.fromisoformat(json.loads(line)["timestamp"].replace("Z", "+00:00"))
            return time.time() - logged.timestamp()
    return 0.0


async def heard(stack: LocalStack, stage: str, copies: int, within_s: float = 10.0) -> None:
    """Wait until every ingest copy's heartbeat watch has settled (2 s after it started: before that it cannot
    tell "no copy" from "not heard yet") and it has heard ``copies`` live copies of ``stage``: what a test does next
    (stop them, send a request) must not race the first heartbeats of a copy that has just started."""
    ages = [ready_for_s(p) for p in stack.services if p.service == "ingest" and p.is_running]
    await asyncio.sleep(max(0.0, SETTLE_S - min(ages, default=SETTLE_S)))
    deadline = time.monotonic() + within_s
    while (counts := await asyncio.to_thread(live_copies_heard, stack, stage)) != [copies] * len(counts):
        assert time.monotonic() < deadline, f"ingest copies hear {counts} live copies of {stage}, not {copies}"
        await asyncio.sleep(0.1)


async def explained(stack: LocalStack, call: Awaitable[InferResponse]) -> InferResponse:
    """``await call``; a deadline missed comes with the tail of every service's log (what went where)."""
    try:
        return await call
    except DeadlineExceeded as exc:
        logs = "\n".join(f"--- {p.name}\n{p.log_tail(15)}" for p in stack.services)
        raise AssertionError(f"{exc}; the services' logs:\n{logs}") from exc


async def restart(stack: LocalStack, service: str, copy: int) -> None:
    process = stack.service(service, copy)
    if not process.is_running:
        await asyncio.to_thread(process.start)
    await asyncio.to_thread(process.wait_ready, 60.0)


@pytest.mark.parametrize("victim", ["preprocess", "router", "postprocess", "ingest"])
async def test_kill_9_of_one_copy_under_load_costs_no_request(
    crash_stack: LocalStack, producer: AsyncClient, photos: dict[str, bytes], victim: str
) -> None:
    await kill_9_under_load_costs_no_request(crash_stack, producer, photos, victim)


async def kill_9_under_load_costs_no_request(
    crash_stack: LocalStack, producer: AsyncClient, photos: dict[str, bytes], victim: str
) -> None:
    """Classify photos at RATE_PER_S while copy 1 of ``victim`` is frozen, then killed: every request gets exactly
    one answer, the right one, in time, and someone (ingest, or the client for an ingest copy) sent again."""
    expected = {name: top_class(await producer.infer(MODEL, image=photos[name], use_cache=False)) for name in PHOTOS}
    resent_before = await asyncio.to_thread(ingest_total, crash_stack, "natriton_ingest_resent_total")
    client_resent_before = producer.resent
    sent: dict[str, str] = {}
    calls: list[asyncio.Future[InferResponse]] = []
    cycle = itertools.cycle(PHOTOS)

    async def load(duration_s: float) -> None:
        started = time.monotonic()
        for i in itertools.count():
            due = started + i / RATE_PER_S
            if due - started > duration_s:
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            photo, request_id = next(cycle), f"{victim}-{i}"
            sent[request_id] = photo
            calls.append(
                asyncio.ensure_future(
                    producer.infer(MODEL, image=photos[photo], use_cache=False, request_id=request_id)
                )
            )

    loading = asyncio.ensure_future(load(6.0))
    await asyncio.sleep(1.5)
    killed_at = time.monotonic()
    await freeze_then_kill(crash_stack, victim, 1)
    await loading
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    finished_in = time.monotonic() - killed_at
    try:
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        assert not failed, f"{len(failed)} of {len(outcomes)} failed after kill -9 of {victim}: {failed[:3]}"
        answers = [o for o in outcomes if isinstance(o, InferResponse)]
        assert sorted(a.request_id for a in answers) == sorted(sent), "every request gets exactly one answer"
        for answer in answers:
            assert top_class(answer) == expected[sent[answer.request_id]], answer
        if victim == "ingest":
            assert producer.resent > client_resent_before, "the client never sent a request again"
        else:
            resent = await asyncio.to_thread(ingest_total, crash_stack, "natriton_ingest_resent_total")
            assert resent > resent_before, "ingest never sent a request again: the victim held nothing?"
        assert finished_in < TIMEOUT_S, "answers came late"
    finally:
        await restart(crash_stack, victim, 1)


async def test_a_stage_with_no_live_copy_answers_unavailable_at_once(
    crash_stack: LocalStack, producer: AsyncClient, photos: dict[str, bytes]
) -> None:
    copies = [crash_stack.service("postprocess", i) for i in range(COPIES["postprocess"])]
    await heard(crash_stack, "postprocess", COPIES["postprocess"])  # ingest knows them before they leave
    try:
        for process in copies:
            await asyncio.to_thread(process.stop, 20.0)  # SIGTERM: each says it is leaving
        # every ingest copy has taken both goodbyes (a request can reach ingest on one subscription before a
        # heartbeat that was sent earlier is handled on another)
        await heard(crash_stack, "postprocess", 0)
        started = time.monotonic()
        with pytest.raises(Unavailable) as refused:
            await explained(crash_stack, producer.infer(MODEL, image=photos["coffee.jpg"], use_cache=False))
        assert time.monotonic() - started < 1.0, "refused only after waiting"
        assert "no live copy of postprocess" in str(refused.value)
    finally:
        for i in range(COPIES["postprocess"]):
            await restart(crash_stack, "postprocess", i)
        await heard(crash_stack, "postprocess", COPIES["postprocess"])
    reply = await explained(crash_stack, producer.infer(MODEL, image=photos["coffee.jpg"], use_cache=False))
    assert top_class(reply) == 967


async def test_requests_on_their_way_to_a_stage_whose_last_copy_left_fail_fast(
    crash_stack: LocalStack, producer: AsyncClient, photos: dict[str, bytes]
) -> None:
    """Both postprocess copies stopped (each says it is leaving) while requests are still upstream, held by frozen
    routers: once the routers go on, those requests have no postprocess to reach. Ingest answers them
    ``unavailable`` about a heartbeat silence after the last copy left, not at their 30 s deadline."""
    routers = [crash_stack.service("router", i) for i in range(COPIES["router"])]
    leavers = [crash_stack.service("postprocess", i) for i in range(COPIES["postprocess"])]
    await heard(crash_stack, "postprocess", COPIES["postprocess"])
    await heard(crash_stack, "router", COPIES["router"])
    try:
        for process in routers:
            assert process.pid is not None
            os.kill(process.pid, signal.SIGSTOP)
        started = time.monotonic()
        calls = [
            asyncio.ensure_future(producer.infer(MODEL, image=photos["coffee.jpg"], use_cache=False, timeout_s=30))
            for _ in range(3)
        ]
        await asyncio.sleep(0.3)  # the requests reach the frozen routers
        for process in leavers:
            assert process.pid is not None
            os.kill(process.pid, signal.SIGTERM)
        await heard(crash_stack, "postprocess", 0)  # both said goodbye (and stopped listening)
        for process in routers:
            assert process.pid is not None
            os.kill(process.pid, signal.SIGCONT)
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        elapsed = time.monotonic() - started
        assert all(isinstance(o, Unavailable) for o in outcomes), outcomes
        assert all("no live copy of postprocess" in str(o) for o in outcomes), outcomes
        assert elapsed < 8.0, f"took {elapsed:.1f} s of a 30 s deadline"
    finally:
        for process in routers:
            if process.pid is not None and process.is_running:
                os.kill(process.pid, signal.SIGCONT)
        for process in leavers:
            await asyncio.to_thread(process.stop, 20.0)
        for i in range(COPIES["postprocess"]):
            await restart(crash_stack, "postprocess", i)
        await heard(crash_stack, "postprocess", COPIES["postprocess"])
        await heard(crash_stack, "router", COPIES["router"])


async def test_requests_held_by_the_last_copy_of_a_stage_fail_fast_when_it_dies(
    crash_stack: LocalStack, producer: AsyncClient, photos: dict[str, bytes]
) -> None:
    """Both router copies killed with requests in hand: those get ``unavailable`` within about the heartbeat
    silence, not at their deadline."""
    routers = [crash_stack.service("router", i) for i in range(COPIES["router"])]
    await heard(crash_stack, "router", COPIES["router"])
    try:
        for process in routers:
            assert process.pid is not None
            os.kill(process.pid, signal.SIGSTOP)
        started = time.monotonic()
        calls = [
            asyncio.ensure_future(producer.infer(MODEL, image=photos["coffee.jpg"], use_cache=False, timeout_s=30))
            for _ in range(4)
        ]
        await asyncio.sleep(0.3)
        for process in routers:
            assert process.pid is not None
            os.kill(process.pid, signal.SIGKILL)
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        elapsed = time.monotonic() - started
        assert all(isinstance(o, Unavailable) for o in outcomes), outcomes
        assert all(isinstance(o, NatritonError) and "no live copy of router" in str(o) for o in outcomes), outcomes
        assert elapsed < 5.0, f"took {elapsed:.1f} s of a 30 s deadline"
    finally:
        for process in routers:
            await asyncio.to_thread(process.stop, 5.0)
        for i in range(COPIES["router"]):
            await restart(crash_stack, "router", i)
        await heard(crash_stack, "router", COPIES["router"])
