"""The fault table: open-loop load through a local stack with two copies of every service, one fault per row.

Each row sends requests at ``rate`` per second for ``duration_s`` seconds (unique images, unique request ids, the
cache on, a ``deadline_s`` deadline, the client library with its retries off so that what survives a fault survives
by the mesh's own recovery) and, at ``fault_at_s``, applies one fault:

- ``kill -9 <service>``: SIGKILL of copy 1 of that service (started again a few seconds later, as a supervisor
  would);
- ``kill -9 tritonserver`` / ``kill -9 redis-server``: SIGKILL of the server (started again on the same port);
- ``restart nats-server``: SIGKILL of nats-server, started again on the same port and store two seconds later.

Answers are counted on a second connection subscribed to the producer's inbox prefix, per reply subject: a request
message answered twice shows up as ``duplicated`` even though the client library would keep only the first. (When the
client library sends a request again, because the ingest copy holding it died or NATS restarted, that is a request
message of its own; answers to both are counted in the notes, and the caller gets the first.)
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nats
import numpy as np
from nats.aio.msg import Msg
from PIL import Image

from loadtests.reliability.tally import LOST, OK, Outcome, Row, tally
from natriton_client import AsyncClient, NatritonError, NoReply, RetryPolicy
from natriton_client.protocol import Header
from natriton_dev.images import sample_photos
from natriton_dev.process import ManagedProcess, wait_until
from natriton_dev.stack import LocalStack

log = logging.getLogger(__name__)
MODEL = "mobilenet_v2"
COPIES = {"ingest": 2, "preprocess": 2, "router": 2, "postprocess": 2}
SERVICE_ENV = {"NATRITON_ROUTER_ANSWERS": "false"}
"""Every answer made by postprocess (decision 0012 would have the router make a classifier's), so each of the four
services holds requests when it is killed, as on a detector's path."""
FAULTS: tuple[str, ...] = (
    "kill -9 router",
    "kill -9 preprocess",
    "kill -9 postprocess",
    "kill -9 ingest",
    "kill -9 tritonserver",
    "kill -9 redis-server",
    "restart nats-server",
)


@dataclass(frozen=True, slots=True)
class FaultRun:
    """How each row is run."""

    rate: float = 30.0
    duration_s: float = 30.0
    fault_at_s: float = 15.0
    deadline_s: float = 5.0
    down_s: float = 2.0
    """How long a killed server stays down before it is started again."""


def unique_images(count: int, seed: int) -> list[bytes]:
    """``count`` different JPEGs of real photos (a stripe of noise makes each one new to the cache)."""
    rng = np.random.default_rng(seed)
    photos = [
        np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((320, 240))) for data in sample_photos().values()
    ]
    images = []
    for i in range(count):
        pixels = photos[i % len(photos)].copy()
        pixels[:4] = rng.integers(0, 255, pixels[:4].shape, dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="JPEG", quality=90)
        images.append(out.getvalue())
    return images


class AnswerCounter:
    """Counts the answers that reach a producer's inbox prefix, per request id (a connection of its own)."""

    def __init__(self, nats_url: str, inbox_prefix: str) -> None:
        self.nats_url = nats_url
        self.inbox_prefix = inbox_prefix
        self.counts: Counter[str] = Counter()
        """Answers per reply subject: one request message each (the client library's resends have their own)."""
        self.per_request: Counter[str] = Counter()
        """Answers per request id, resends included."""
        self._nc: nats.NATS | None = None

    async def start(self) -> None:
        self._nc = await nats.connect(self.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.25)
        await self._nc.subscribe(f"{self.inbox_prefix}.>", cb=self._on_answer, pending_msgs_limit=1_000_000)
        await self._nc.flush()

    async def _on_answer(self, msg: Msg) -> None:
        self.counts[msg.subject] += 1
        self.per_request[(msg.headers or {}).get(Header.REQUEST_ID, "")] += 1

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()


async def send_one(client: AsyncClient, image: bytes, request_id: str, started: float) -> Outcome:
    """One request: how it ended."""
    sent = time.monotonic()
    try:
        await client.infer(MODEL, image=image, request_id=request_id)
        outcome = OK
    except NoReply:
        outcome = LOST
    except NatritonError as exc:
        outcome = str(exc.code)
        log.debug("%s: %s", request_id, exc)
    return Outcome(request_id, sent - started, outcome, time.monotonic() - sent)


def kill_now(process: ManagedProcess) -> None:
    """SIGKILL the process itself (not its group: what a crash looks like)."""
    if process.pid is not None and process.is_running:
        os.kill(process.pid, signal.SIGKILL)


def bring_back(process: ManagedProcess, wait_ready: Callable[[], None] | None = None) -> None:
    """Reap a killed process and start it again on the same port (unless a supervisor already did)."""
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and not process.is_running:
        time.sleep(0.1)  # a supervisor may restart it by itself
    if not process.is_running:
        process.stop(timeout=5.0)
        process.start()
    if wait_ready is not None:
        wait_ready()


def apply_fault(stack: LocalStack, fault: str, down_s: float) -> None:
    """Do ``fault`` to ``stack`` and bring the victim back (blocking: run it in a thread)."""
    target = fault.split()[-1]
    if target in COPIES:
        victim = stack.service(target, 1)
        kill_now(victim)
        time.sleep(down_s)
        bring_back(victim, lambda: victim.wait_ready(60.0))
        return
    server = {"tritonserver": stack.triton, "redis-server": stack.redis, "nats-server": stack.nats}[target]
    kill_now(server)
    time.sleep(down_s)
    server.stop(timeout=10.0)  # reaps it and whatever it left (Triton's model workers)
    server.start()


def wait_healthy(stack: LocalStack, timeout_s: float = 120.0) -> None:
    """Every service copy running and ready again (between rows)."""
    for process in stack.services:
        if not process.is_running:
            process.stop(timeout=5.0)
            process.start()
    for process in stack.services:
        process.wait_ready(timeout_s)


async def run_row(stack: LocalStack, fault: str, settings: FaultRun, images: Sequence[bytes]) -> Row:
    """One row: load, the fault in the middle, every request to its end."""
    inbox_prefix = f"_INBOX.faults{uuid.uuid4().hex[:8]}"
    counter = AnswerCounter(stack.nats_url, inbox_prefix)
    await counter.start()
    client = await AsyncClient.connect(
        stack.nats_url,
        timeout_s=settings.deadline_s,
        retry=RetryPolicy(max_retries=0),
        reply_grace_s=2.0,
        inbox_prefix=inbox_prefix,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
    )
    tag = fault.split()[-1]
    calls: list[asyncio.Task[Outcome]] = []
    started = time.monotonic()
    fault_task: asyncio.Future[None] | None = None
    try:
        total = int(settings.rate * settings.duration_s)
        for i in range(total):
            due = started + i / settings.rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if fault_task is None and time.monotonic() - started >= settings.fault_at_s:
                fault_task = asyncio.ensure_future(asyncio.to_thread(apply_fault, stack, fault, settings.down_s))
            request_id = f"{tag}-{i}"
            calls.append(asyncio.ensure_future(send_one(client, images[i % len(images)], request_id, started)))
        outcomes = await asyncio.gather(*calls)
        if fault_task is not None:
            await fault_task
        await asyncio.sleep(1.0)  # late second answers, if any, arrive
    finally:
        await client.close()
        await counter.close()
    row = tally(fault, outcomes, counter.counts)
    row.notes["client_resent"] = client.resent
    row.notes["answers_to_resends_dropped_by_the_client"] = sum(n - 1 for n in counter.per_request.values() if n > 1)
    return row


async def run_faults(
    workdir: Path, faults: Sequence[str] = FAULTS, settings: FaultRun = FaultRun()
) -> tuple[list[Row], dict[str, object]]:
    """Every row on one stack; returns the rows and the run's settings."""
    per_row = int(settings.rate * settings.duration_s)
    images = await asyncio.to_thread(unique_images, per_row * len(faults), 1)
    rows = []
    with LocalStack(
        workdir, copies=COPIES, load_models=(MODEL,), model_control_mode="explicit", service_env=SERVICE_ENV
    ) as stack:
        for number, fault in enumerate(faults):
            await asyncio.to_thread(wait_healthy, stack)
            await asyncio.to_thread(wait_until, lambda: stack.triton.is_running, 60.0, 0.2, "tritonserver running")
            log.info("row %d/%d: %s", number + 1, len(faults), fault)
            chunk = images[number * per_row : (number + 1) * per_row]
            row = await run_row(stack, fault, settings, chunk)
            log.info(
                "%s: sent %d ok %d errors %s lost %d duplicated %d",
                fault, row.sent, row.ok, row.typed_errors, row.lost, row.duplicated,
            )  # fmt: skip
            rows.append(row)
    meta: dict[str, object] = {
        "model": MODEL,
        "copies": COPIES,
        "service_env": SERVICE_ENV,
        "rate_per_s": settings.rate,
        "duration_s": settings.duration_s,
        "fault_at_s": settings.fault_at_s,
        "deadline_s": settings.deadline_s,
        "down_s": settings.down_s,
    }
    return rows, meta
