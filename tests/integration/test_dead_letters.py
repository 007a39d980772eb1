"""Dead letters with real processes: nats-server, redis-server and a preprocess service process (acknowledgement
wait 1 s, 2 deliveries for reliable frames). The test plays a camera's owner (it publishes frame tasks to the reliable
stream and listens on its reply subject) and, where a frame gets that far, the router (an in-process runtime serving
the route stage, which answers as told: an error, an answer, or never).

- preprocess brings a reliable consumer made by an older version (delivering forever) to its settings;
- poison frames (a malformed body, pixels gone from the frame store, no envelope) are dead letters at once, exactly
  once, terminated: never delivered again; a failed real-time frame is answered and acknowledged, not kept;
- a frame nobody answers is a dead letter after its two deliveries (the server's max-deliveries advisory);
- a permanent error at a later hop is a dead letter too (the original read from the stream by sequence); a
  transient one is delivered again and the owner gets only the answer of the delivery that succeeds; one that
  persists to the last delivery is a dead letter;
- ``natriton deadletters ls | show | replay`` list, show and publish them again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import numpy as np
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, PubAck
from nats.js.errors import NotFoundError

from natriton import deadletters as dl
from natriton import subjects
from natriton.catalog import open_bucket, publish_model
from natriton.claimcheck import FrameStore, frame_key
from natriton.envelope import Envelope
from natriton.errors import ErrorCode, MeshError
from natriton.frames import CONSUMER_NAMES, FRAMES_PREFIX, STREAM_NAMES, ensure_streams, frames_subject
from natriton.headers import now_ms
from natriton.messages import (
    Codec,
    Detections,
    ErrorReply,
    FrameRef,
    FrameTask,
    InferResponse,
    Job,
    ModelInfo,
    Reply,
    StreamMode,
)
from natriton.pipeline import REPLY_CODEC, reply_to_owner, serve_stage
from natriton.profiles import ColorOrder, DetectorProfile, ImageSpec, ResizeMode, TensorSpec
from natriton.runtime import Inbound, ServiceRuntime
from natriton.settings import CommonSettings
from natriton_dev.cli.deadletters import read_letters
from natriton_dev.mesh import ServiceProcess
from natriton_dev.servers import NatsServer, RedisServer

RELIABLE = StreamMode.RELIABLE
STREAM, CONSUMER = STREAM_NAMES[RELIABLE], CONSUMER_NAMES[RELIABLE]
ACK_WAIT_S = 1.0
MAX_DELIVER = 2
FRAMES_OF = f"{FRAMES_PREFIX}.{RELIABLE.value}"
FRAMES: Codec[FrameTask] = Codec(FrameTask)
NATRITON = Path(sys.executable).parent / "natriton"
DETECTOR = ModelInfo(
    name="detector",
    versions=("1",),
    task="detector",
    max_batch_size=8,
    inputs=(TensorSpec(name="IMAGE", datatype="UINT8", shape=(32, 32, 3)),),
    outputs=(TensorSpec(name="BOXES", datatype="FP32", shape=(-1, 4)), TensorSpec(name="SCORES", datatype="FP32",
                                                                                   shape=(-1, 1))),
    profile=DetectorProfile(
        boxes_output="BOXES",
        scores_output="SCORES",
        image=ImageSpec(input="IMAGE", datatype="UINT8", height=32, width=32, channels_last=True,
                        color=ColorOrder.BGR, resize=ResizeMode.STRETCH),
    ),
)  # fmt: skip


@dataclass
class Mesh:
    nats_url: str
    redis_url: str
    preprocess: ServiceProcess


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    workdir: Path = tmp_path_factory.mktemp("dead-letters")
    with NatsServer(workdir / "nats") as nats_server, RedisServer(workdir / "redis") as redis_server:

        async def prepare() -> None:
            nc = await nats.connect(nats_server.url)
            try:  # the catalog, as the router publishes it
                await publish_model(await open_bucket(nc, subjects.MODELS_BUCKET, create=True), DETECTOR)
                # the reliable consumer as an older preprocess made it: delivering forever
                js = nc.jetstream()
                await ensure_streams(js)
                old = ConsumerConfig(
                    durable_name=CONSUMER, deliver_group=CONSUMER, deliver_subject=nc.new_inbox(),
                    ack_policy=AckPolicy.EXPLICIT, ack_wait=10.0, max_deliver=-1, filter_subject=f"{FRAMES_OF}.*",
                )  # fmt: skip
                await js.add_consumer(STREAM, old)
            finally:
                await nc.close()

        asyncio.run(prepare())
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("NATRITON_")},
            "NATRITON_NATS_URL": nats_server.url,
            "NATRITON_REDIS_URL": redis_server.url,
            "NATRITON_FRAME_ACK_WAIT_S": str(ACK_WAIT_S),
            "NATRITON_RELIABLE_MAX_DELIVER": str(MAX_DELIVER),
            "NATRITON_LOG_FORMAT": "text",
            "PYTHONUNBUFFERED": "1",
        }
        preprocess = ServiceProcess("preprocess", workdir / "services", env, metrics_port=0)
        preprocess.start()
        try:
            preprocess.wait_ready(30.0)
            yield Mesh(nats_server.url, redis_server.url, preprocess)
        finally:
            preprocess.stop()


@dataclass
class FakeRouter:
    """The route stage: each frame (by request id) gets the planned outcome of its n-th delivery ('ok', an error
    code, or 'silent'); the last step repeats."""

    runtime: ServiceRuntime
    plans: dict[str, list[str]] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    async def handle(self, inbound: Inbound) -> None:
        envelope = Envelope.from_message(inbound.headers, inbound.reply)
        self.seen[envelope.request_id] += 1
        plan = self.plans.get(envelope.request_id) or ["silent"]
        step = plan[min(self.seen[envelope.request_id], len(plan)) - 1]
        if step == "ok":
            result = Detections(detections=(), image_width=64, image_height=48)
            answer = InferResponse(request_id=envelope.request_id, model="detector", version="1", result=result)
            await reply_to_owner(self.runtime, envelope, answer)
        elif step != "silent":
            raise MeshError(ErrorCode(step), f"the router says {step}")


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def router(mesh: Mesh) -> AsyncIterator[FakeRouter]:
    settings = CommonSettings(nats_url=mesh.nats_url, metrics_port=0, instance_id="fake-router")
    runtime = ServiceRuntime("router", "0.0.1", settings)
    await runtime.connect()
    fake = FakeRouter(runtime)
    await serve_stage(runtime, "route", subjects.ROUTE, fake.handle)
    yield fake
    await runtime.drain()


@pytest_asyncio.fixture(loop_scope="session")
async def nc(mesh: Mesh) -> AsyncIterator[NATS]:
    connection = await nats.connect(mesh.nats_url)
    yield connection
    await connection.close()


class Owner:
    """A camera's owner: publishes frame tasks and collects every answer by request id."""

    def __init__(self, nc: NATS, store: FrameStore, camera: str) -> None:
        self.nc, self.store, self.camera = nc, store, camera
        self.inbox = nc.new_inbox()
        self.answers: dict[str, list[Reply]] = defaultdict(list)

    async def start(self) -> Owner:
        async def on_answer(msg: Msg) -> None:
            reply = REPLY_CODEC.decode(msg.data)
            self.answers[reply.request_id].append(reply)

        await self.nc.subscribe(self.inbox, cb=on_answer)
        return self

    @staticmethod
    def pixels(number: int) -> np.ndarray:
        """Frame ``number``'s pixels (64x48 RGB)."""
        return np.random.default_rng(number).integers(0, 255, (48, 64, 3), dtype=np.uint8)

    async def frame(
        self,
        number: int,
        *,
        stored: bool = True,
        body: bytes | None = None,
        envelope: bool = True,
        mode: StreamMode = RELIABLE,
    ) -> tuple[str, PubAck, bytes]:
        """Publish frame ``number`` (its pixels stored unless not ``stored``; ``body`` replaces the task)."""
        mesh_id = f"{self.camera}-{number}-{uuid.uuid4().hex[:6]}"
        request_id = f"{self.camera}:{number}"
        pixels = self.pixels(number)
        if stored:
            await self.store.put(frame_key(mesh_id), pixels.tobytes(), ttl_s=60)
        task = FrameTask(
            job=Job(model="detector", version="", task="detector"),
            frame=FrameRef(key=frame_key(mesh_id), width=64, height=48, size=pixels.nbytes),
            camera=self.camera,
            frame_number=number,
        )
        data = FRAMES.encode(task) if body is None else body
        headers = Envelope(mesh_id, request_id, now_ms() + 30_000, self.inbox).to_headers() if envelope else None
        ack = await self.nc.jetstream().publish(frames_subject(mode, self.camera), data, headers=headers)
        return request_id, ack, data


async def letters_of(nc: NATS, camera: str) -> list[tuple[int, dl.DeadLetter]]:
    """The dead letters of one camera's reliable frames."""
    try:
        found = await read_letters(nc.jetstream(), stream=STREAM, limit=1000, timeout_s=0.5)
    except NotFoundError:
        return []
    return [(seq, letter) for seq, letter in found if letter is not None and letter.subject.endswith(f".{camera}")]


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within_s} s: {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
def camera() -> str:
    return f"cam-{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture(loop_scope="session")
async def store(mesh: Mesh) -> AsyncIterator[FrameStore]:
    frame_store = FrameStore(mesh.redis_url)
    yield frame_store
    await frame_store.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_preprocess_brings_an_older_reliable_consumer_to_its_settings(nc: NATS) -> None:
    config = (await nc.jetstream().consumer_info(STREAM, CONSUMER)).config
    assert (config.max_deliver, config.ack_wait) == (MAX_DELIVER, ACK_WAIT_S)
    advisories = {e["name"]: e["subject"] for e in await endpoints(nc, "natriton-preprocess")}
    assert advisories[f"max_deliveries_{CONSUMER}"] == f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{STREAM}.{CONSUMER}"


async def endpoints(nc: NATS, service: str) -> list[dict[str, Any]]:
    """A service's endpoints as ``$SRV.INFO`` lists them."""
    reply = await nc.request(f"$SRV.INFO.{service}", b"", timeout=5)
    found: list[dict[str, Any]] = json.loads(reply.data)["endpoints"]
    return found


@pytest.mark.asyncio(loop_scope="session")
async def test_poison_frames_are_dead_letters_at_once_and_never_delivered_again(
    nc: NATS, store: FrameStore, camera: str, router: FakeRouter
) -> None:
    owner = await Owner(nc, store, camera).start()
    malformed_id, malformed_ack, malformed = await owner.frame(0, body=b"\x93not a frame task")
    gone_id, gone_ack, gone = await owner.frame(1, stored=False)  # the claim check's pixels are not in Redis
    _, stray_ack, stray = await owner.frame(2, envelope=False)  # no owner to answer at all

    async def all_dead() -> bool:
        return len(await letters_of(nc, camera)) >= 3

    await eventually(all_dead, 10, "three dead letters")
    await asyncio.sleep(ACK_WAIT_S * (MAX_DELIVER + 1))  # long enough for any redelivery to have happened
    letters = {letter.stream_seq: letter for _, letter in await letters_of(nc, camera)}
    assert sorted(letters) == sorted([malformed_ack.seq, gone_ack.seq, stray_ack.seq])  # each exactly once
    for ack, body in ((malformed_ack, malformed), (gone_ack, gone), (stray_ack, stray)):
        letter = letters[ack.seq]
        assert (letter.stream, letter.consumer, letter.reason) == (STREAM, CONSUMER, dl.Reason.PERMANENT)
        assert letter.deliveries == 1 and letter.data == body
        assert letter.subject == frames_subject(RELIABLE, camera) and letter.writer.startswith("preprocess/")
    assert letters[malformed_ack.seq].code == "invalid_argument" and "malformed" in letters[malformed_ack.seq].message
    assert letters[gone_ack.seq].code == "not_found" and "expired" in letters[gone_ack.seq].message
    assert letters[gone_ack.seq].headers["Natriton-Mesh-Id"].startswith(f"{camera}-1-")
    assert letters[stray_ack.seq].code == "invalid_argument" and "envelope" in letters[stray_ack.seq].message
    # the owners were answered once each, with the error; the frames were terminated, not delivered again
    assert [type(r) for r in owner.answers[malformed_id]] == [ErrorReply]
    assert [r.code for r in owner.answers[gone_id] if isinstance(r, ErrorReply)] == [ErrorCode.NOT_FOUND]
    assert len(owner.answers[gone_id]) == 1 and set(owner.answers) == {malformed_id, gone_id}
    assert router.seen.get(gone_id, 0) == 0  # it never got past preprocess
    consumer = await nc.jetstream().consumer_info(STREAM, CONSUMER)
    assert consumer.num_ack_pending == 0 and consumer.num_redelivered == 0
    for ack in (malformed_ack, gone_ack, stray_ack):
        with pytest.raises(NotFoundError):
            await nc.jetstream().get_msg(STREAM, ack.seq)  # terminated: gone from the work queue


@pytest.mark.asyncio(loop_scope="session")
async def test_a_real_time_frame_that_fails_is_answered_and_acknowledged_but_not_kept(
    nc: NATS, store: FrameStore, camera: str, router: FakeRouter
) -> None:
    """Real-time frames are delivered once and worth only their freshness (their owner abandons stale ones and
    deletes their pixels): a failure is their answer, not a dead letter."""
    realtime = StreamMode.REALTIME
    owner = await Owner(nc, store, camera).start()
    gone_id, _, _ = await owner.frame(0, stored=False, mode=realtime)
    router.plans[f"{camera}:1"] = ["unavailable"]
    busy_id, _, _ = await owner.frame(1, mode=realtime)

    async def answered() -> bool:
        return bool(owner.answers.get(gone_id)) and bool(owner.answers.get(busy_id))

    await eventually(answered, 10, "both answered")
    await asyncio.sleep(ACK_WAIT_S * 2)
    assert [r.code for r in owner.answers[gone_id] if isinstance(r, ErrorReply)] == [ErrorCode.NOT_FOUND]
    assert [r.code for r in owner.answers[busy_id] if isinstance(r, ErrorReply)] == [ErrorCode.UNAVAILABLE]
    assert router.seen[busy_id] == 1  # not delivered again
    assert await read_letters(nc.jetstream(), stream=STREAM_NAMES[realtime], limit=100, timeout_s=0.5) == []
    consumer = await nc.jetstream().consumer_info(STREAM_NAMES[realtime], CONSUMER_NAMES[realtime])
    assert consumer.num_ack_pending == 0


@pytest.mark.asyncio(loop_scope="session")
async def test_a_frame_nobody_answers_is_a_dead_letter_after_its_deliveries(
    nc: NATS, store: FrameStore, camera: str, router: FakeRouter
) -> None:
    owner = await Owner(nc, store, camera).start()
    request_id, ack, body = await owner.frame(0)  # the router takes it and never answers (no plan: silent)

    async def dead() -> bool:
        return bool(await letters_of(nc, camera))

    await eventually(dead, ACK_WAIT_S * MAX_DELIVER + 10, "a dead letter")
    ((_, letter),) = await letters_of(nc, camera)
    assert (letter.stream_seq, letter.reason, letter.code, letter.deliveries) == (
        ack.seq, dl.Reason.MAX_DELIVERIES, "", MAX_DELIVER,
    )  # fmt: skip
    assert letter.message == f"delivered {MAX_DELIVER} times without an answer" and letter.data == body
    assert letter.published_ms > 0 and letter.dead_at_ms >= letter.published_ms
    assert router.seen[request_id] == MAX_DELIVER and owner.answers == {}
    with pytest.raises(NotFoundError):
        await nc.jetstream().get_msg(STREAM, ack.seq)  # removed from the work queue once its dead letter is stored
    await asyncio.sleep(ACK_WAIT_S * 2)
    assert len(await letters_of(nc, camera)) == 1 and router.seen[request_id] == MAX_DELIVER


@pytest.mark.asyncio(loop_scope="session")
async def test_errors_at_a_later_hop_retry_the_transient_and_dead_letter_the_permanent(
    nc: NATS, store: FrameStore, camera: str, router: FakeRouter
) -> None:
    owner = await Owner(nc, store, camera).start()
    router.plans.update(
        {
            f"{camera}:0": ["unavailable", "ok"],  # fails once, then succeeds on its second delivery
            f"{camera}:1": ["invalid_argument"],  # permanent at the router
            f"{camera}:2": ["overloaded"],  # transient on every delivery: dead after the last
        }
    )
    (retried, _, _), (poisoned, poisoned_ack, poisoned_body), (exhausted, exhausted_ack, _) = [
        await owner.frame(number) for number in range(3)
    ]

    async def settled() -> bool:
        return all(owner.answers.get(request_id) for request_id in (retried, poisoned, exhausted))

    await eventually(settled, 15, "every frame answered")
    await asyncio.sleep(ACK_WAIT_S * 2)
    # the transient failure was not answered: only the answer of the delivery that succeeded reached the owner
    assert [type(r) for r in owner.answers[retried]] == [InferResponse] and router.seen[retried] == 2
    assert [(type(r), r.code) for r in owner.answers[poisoned] if isinstance(r, ErrorReply)] == [
        (ErrorReply, ErrorCode.INVALID_ARGUMENT)
    ]
    assert router.seen[poisoned] == 1 and len(owner.answers[poisoned]) == 1
    assert [r.code for r in owner.answers[exhausted] if isinstance(r, ErrorReply)] == [ErrorCode.OVERLOADED]
    assert router.seen[exhausted] == MAX_DELIVER
    letters = {letter.stream_seq: letter for _, letter in await letters_of(nc, camera)}
    assert sorted(letters) == sorted([poisoned_ack.seq, exhausted_ack.seq])
    poisoned_letter, exhausted_letter = letters[poisoned_ack.seq], letters[exhausted_ack.seq]
    assert (poisoned_letter.reason, poisoned_letter.code, poisoned_letter.deliveries) == (
        dl.Reason.PERMANENT, "invalid_argument", 1
    )  # fmt: skip
    assert poisoned_letter.data == poisoned_body  # read back from the stream by its sequence
    assert poisoned_letter.writer.startswith("router/")
    assert (exhausted_letter.reason, exhausted_letter.code, exhausted_letter.deliveries) == (
        dl.Reason.RETRIES_EXHAUSTED, "overloaded", MAX_DELIVER
    )  # fmt: skip
    info = await nc.jetstream().stream_info(STREAM)
    assert info.state.messages == 0


def natriton(*args: str, mesh: Mesh) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATRITON_")}
    return subprocess.run(
        [str(NATRITON), *args, "--nats-url", mesh.nats_url], env=env, capture_output=True, text=True, timeout=30,
        check=False,
    )  # fmt: skip


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"not JSON (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")


@pytest.mark.asyncio(loop_scope="session")
async def test_the_cli_lists_shows_and_replays_dead_letters(
    mesh: Mesh, nc: NATS, store: FrameStore, camera: str, router: FakeRouter
) -> None:
    owner = await Owner(nc, store, camera).start()
    request_id, ack, body = await owner.frame(0, stored=False)

    async def dead() -> bool:
        return bool(await letters_of(nc, camera))

    await eventually(dead, 10, "a dead letter")
    ((seq, _),) = await letters_of(nc, camera)

    listed = as_json(await asyncio.to_thread(natriton, "deadletters", "ls", "--stream", STREAM, "--json", mesh=mesh))
    row = next(row for row in listed["dead_letters"] if row["seq"] == seq)
    assert listed["ok"] and listed["total"] >= 1
    assert (row["stream"], row["stream_seq"], row["code"], row["reason"], row["deliveries"], row["size"]) == (
        STREAM, ack.seq, "not_found", "permanent", 1, len(body)
    )  # fmt: skip
    table = await asyncio.to_thread(natriton, "deadletters", "ls", mesh=mesh)
    assert table.returncode == 0 and frames_subject(RELIABLE, camera) in table.stdout and "not_found" in table.stdout

    shown = as_json(await asyncio.to_thread(natriton, "deadletters", "show", str(seq), "--json", mesh=mesh))
    assert shown["subject"] == frames_subject(RELIABLE, camera) and shown["consumer"] == CONSUMER
    assert shown["body"]["camera"] == camera and shown["body"]["frame_number"] == 0  # the msgpack task, decoded
    assert base64.b64decode(shown["data_base64"]) == body and shown["headers"]["Natriton-Reply-To"] == owner.inbox
    missing = await asyncio.to_thread(natriton, "deadletters", "show", "999999", mesh=mesh)
    assert missing.returncode == 11 and "no dead letter 999999" in missing.stderr

    # the problem fixed (the pixels stored again), a replay goes through: delivered again from the stream, answered
    # by the router, and --delete removed the dead letter
    await store.put(FRAMES.decode(body).frame.key, owner.pixels(0).tobytes(), ttl_s=60)
    router.plans[request_id] = ["ok"]
    replayed = as_json(
        await asyncio.to_thread(natriton, "deadletters", "replay", str(seq), "--delete", "--json", mesh=mesh)
    )
    (entry,) = replayed["replayed"]
    assert entry["seq"] == seq and entry["stream"] == STREAM and entry["new_stream_seq"] > ack.seq and entry["deleted"]

    async def answered_again() -> bool:
        return len(owner.answers[request_id]) == 2

    await eventually(answered_again, 10, "the replayed frame answered")
    first, second = owner.answers[request_id]
    assert isinstance(first, ErrorReply) and isinstance(second, InferResponse)
    assert router.seen[request_id] == 1 and await letters_of(nc, camera) == []
    none_left = await asyncio.to_thread(natriton, "deadletters", "replay", str(seq), mesh=mesh)
    assert none_left.returncode == 11
    usage = await asyncio.to_thread(natriton, "deadletters", "replay", mesh=mesh)
    assert usage.returncode == 2
