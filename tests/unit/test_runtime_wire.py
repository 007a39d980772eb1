"""The runtime's side of the wire: packs from natriton.wirebatch are handled item by item, publish_soon packs one
turn's messages, and nats-py reads with the configured buffer size."""

from __future__ import annotations

import asyncio
from typing import Any

import nats.aio.client as nats_client
import pytest
from nats.aio.msg import Msg

from natriton.runtime import Inbound, ServiceRuntime
from natriton.settings import CommonSettings
from natriton.wirebatch import BATCH_HEADER, Item, pack, unpack
from tests.unit.test_telemetry import RecordingConnection


class PayloadRecorder(RecordingConnection):
    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[tuple[str, bytes, dict[str, str] | None]] = []
        self.max_payload = 1024 * 1024

    async def publish(self, subject: str, payload: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.bodies.append((subject, payload, headers))


@pytest.fixture
async def runtime(monkeypatch: pytest.MonkeyPatch) -> tuple[ServiceRuntime, PayloadRecorder, list[int]]:
    fake = PayloadRecorder()
    read_sizes: list[int] = []

    async def connect(**_: Any) -> PayloadRecorder:
        read_sizes.append(nats_client.DEFAULT_BUFFER_SIZE)
        return fake

    monkeypatch.setattr("natriton.runtime.nats.connect", connect)
    monkeypatch.setattr(nats_client, "DEFAULT_BUFFER_SIZE", nats_client.DEFAULT_BUFFER_SIZE)  # restored after
    rt = ServiceRuntime("demo", "0.1.0", CommonSettings(instance_id="copy-1", nats_read_buffer_bytes=300_000))
    await rt.connect()
    return rt, fake, read_sizes


async def test_nats_py_reads_with_the_configured_buffer(runtime: tuple[ServiceRuntime, Any, list[int]]) -> None:
    assert runtime[2] == [300_000]


async def test_a_pack_is_handled_item_by_item_with_each_items_headers(
    runtime: tuple[ServiceRuntime, PayloadRecorder, list[int]],
) -> None:
    rt, fake, _ = runtime
    seen: list[tuple[bytes, str]] = []

    async def handler(inbound: Inbound) -> None:
        seen.append((inbound.data, inbound.headers["Natriton-Mesh-Id"]))

    await rt.add_endpoint("work", "demo.work", handler, queue_group="q.demo", packed=True)
    callback = fake.subscriptions["demo.work"]
    items = [Item({"Natriton-Mesh-Id": f"m{i}"}, f"body{i}".encode()) for i in range(3)]
    await callback(Msg(_client=None, subject="demo.work", data=pack(items), headers={BATCH_HEADER: "3"}))  # type: ignore[arg-type]
    await callback(Msg(_client=None, subject="demo.work", data=b"\xc1junk", headers={BATCH_HEADER: "2"}))  # type: ignore[arg-type]
    await asyncio.gather(*list(rt._tasks))
    assert seen == [(b"body0", "m0"), (b"body1", "m1"), (b"body2", "m2")]
    counters = rt.endpoint_counters()["work"]
    assert (counters.received, counters.succeeded, counters.failed) == (4, 3, 1)  # the malformed pack: one failure


async def test_publish_soon_sends_one_turns_messages_to_a_subject_as_one(
    runtime: tuple[ServiceRuntime, PayloadRecorder, list[int]],
) -> None:
    rt, fake, _ = runtime
    for i in range(3):
        rt.publish_soon("demo.next", f"r{i}".encode(), {"Natriton-Mesh-Id": f"m{i}"})
    await asyncio.sleep(0)
    await asyncio.gather(*list(rt._tasks))
    ((subject, body, headers),) = fake.bodies
    assert subject == "demo.next" and headers == {BATCH_HEADER: "3"}
    assert [i.data for i in unpack(body)] == [b"r0", b"r1", b"r2"]


async def test_a_public_endpoint_never_unpacks(runtime: tuple[ServiceRuntime, PayloadRecorder, list[int]]) -> None:
    """A producer must not hide headers of its choosing (another tenant's identity) inside a pack."""
    rt, fake, _ = runtime
    seen: list[Inbound] = []

    async def handler(inbound: Inbound) -> None:
        seen.append(inbound)

    await rt.add_endpoint("infer", "demo.public", handler, queue_group="q.public")
    forged = [Item({"Nats-Request-Info": '{"acc":"OTHER"}', "Natriton-Mesh-Id": "m"}, b"x")]
    outer = {BATCH_HEADER: "1", "Nats-Request-Info": '{"acc":"TENANT_A"}'}
    await fake.subscriptions["demo.public"](Msg(_client=None, subject="demo.public", data=pack(forged), headers=outer))  # type: ignore[arg-type]
    await asyncio.gather(*list(rt._tasks))
    assert [(i.data, i.headers) for i in seen] == [(pack(forged), outer)]  # one message, as sent, with its own headers
