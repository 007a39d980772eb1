"""Live views of the mesh's NATS KV buckets: the model catalog and the routing policies.

The router is the only service that talks to Triton. It reads each model's config from Triton and
publishes a :class:`~natriton.messages.ModelInfo` per model into the bucket ``natriton_models``; the
other services watch it, so they learn about new models and versions without restarts.

Operators change :class:`~natriton.messages.RoutePolicy` entries in ``natriton_routes`` at run time
(``python -m natriton_router.routes``); the router follows them, and ingest folds the policy's
revision into cache keys so a policy change never serves answers computed under the old one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Generic, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from natriton.errors import ErrorCode, MeshError
from natriton.messages import Codec, ModelInfo, RoutePolicy
from natriton.subjects import MODELS_BUCKET, ROUTES_BUCKET

log = logging.getLogger(__name__)
T = TypeVar("T")
_MODEL_CODEC: Codec[ModelInfo] = Codec(ModelInfo)
_ROUTE_CODEC: Codec[RoutePolicy] = Codec(RoutePolicy)


async def open_bucket(nc: NATS, bucket: str, *, create: bool) -> KeyValue:
    """Bind to ``bucket``, creating it when ``create``, else waiting until someone has."""
    js = nc.jetstream()
    while True:
        try:
            return await js.key_value(bucket)
        except BucketNotFoundError:
            if create:
                return await js.create_key_value(bucket=bucket, history=1)
            log.info("waiting for the KV bucket %s (is the router up?)", bucket)
            await asyncio.sleep(1.0)


async def publish_model(kv: KeyValue, info: ModelInfo) -> None:
    """Write (or replace) one model's catalog entry."""
    await kv.put(info.name, _MODEL_CODEC.encode(info))


async def put_route(kv: KeyValue, policy: RoutePolicy) -> int:
    """Write (or replace) one model's routing policy; returns the new revision."""
    return int(await kv.put(policy.model, _ROUTE_CODEC.encode(policy)))


class BucketView(Generic[T]):
    """A live, read-only copy of one KV bucket whose values are messages of one type."""

    bucket = ""
    create = False

    def __init__(self, codec: Codec[T]) -> None:
        self._codec = codec
        self._entries: dict[str, T] = {}
        self._revisions: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    def load(self, entries: dict[str, T]) -> None:
        """Replace the contents by hand (unit tests, tools)."""
        self._entries = dict(entries)

    async def start(self, nc: NATS) -> None:
        """Load the current entries, then keep following updates in the background."""
        kv = await open_bucket(nc, self.bucket, create=self.create)
        watcher = await kv.watchall()
        loaded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.get_running_loop().create_task(self._follow(watcher, loaded))
        await loaded

    async def _follow(self, watcher: Any, loaded: asyncio.Future[None]) -> None:
        async for entry in watcher:
            if entry is None:  # end of the initial values
                if not loaded.done():
                    loaded.set_result(None)
                continue
            async with self._changed:
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    self._entries.pop(entry.key, None)
                    self._revisions[entry.key] = int(entry.revision or 0)
                else:
                    try:
                        self._entries[entry.key] = self._codec.decode(entry.value)
                        self._revisions[entry.key] = int(entry.revision or 0)
                    except msgspec.MsgspecError:
                        log.error("%s entry %r does not decode; ignoring it", self.bucket, entry.key)
                self._changed.notify_all()
            if not loaded.done():
                loaded.set_result(None)

    async def stop(self) -> None:
        """Stop following updates."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def names(self) -> list[str]:
        """Keys present now."""
        return sorted(self._entries)

    def get(self, name: str) -> T | None:
        """The entry, if present."""
        return self._entries.get(name)

    def revision(self, name: str) -> int:
        """The KV revision of the last change to ``name`` (0 if never set)."""
        return self._revisions.get(name, 0)

    async def wait_for(self, name: str) -> T:
        """Wait until ``name`` is present (wrap in ``asyncio.timeout`` to bound it)."""
        async with self._changed:
            await self._changed.wait_for(lambda: name in self._entries)
        return self._entries[name]


class ModelCatalog(BucketView[ModelInfo]):
    """The models Triton serves, as the router last published them."""

    bucket = MODELS_BUCKET

    def __init__(self) -> None:
        super().__init__(_MODEL_CODEC)

    @classmethod
    def from_models(cls, models: list[ModelInfo]) -> ModelCatalog:
        """A fixed catalog (unit tests, tools)."""
        catalog = cls()
        catalog.load({m.name: m for m in models})
        return catalog

    def require(self, name: str, version: str = "") -> tuple[ModelInfo, str]:
        """The model and the concrete version to use; typed ``not_found`` errors otherwise."""
        info = self.get(name)
        if info is None:
            known = ", ".join(self.names()) or "none"
            raise MeshError(ErrorCode.NOT_FOUND, f"unknown model {name!r} (known: {known})")
        if not version:
            version = info.latest_version
        if version not in info.versions:
            raise MeshError(
                ErrorCode.NOT_FOUND, f"model {name!r} has no ready version {version!r} (ready: {list(info.versions)})"
            )
        return info, version


class RouteTable(BucketView[RoutePolicy]):
    """Routing policies per model (absent = the latest version answers)."""

    bucket = ROUTES_BUCKET
    create = True

    def __init__(self) -> None:
        super().__init__(_ROUTE_CODEC)
