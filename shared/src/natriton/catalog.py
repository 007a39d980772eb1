"""Live views of the mesh's NATS KV buckets: the model catalog and the routing policies.

The router is the only service that talks to Triton. It reads each model's config from Triton and
publishes a :class:`~natriton.messages.ModelInfo` per model into the bucket ``natriton_models``; the
other services watch it, so they learn about new models and versions without restarts.

Operators change :class:`~natriton.messages.RoutePolicy` entries in ``natriton_routes`` at run time
(``natriton routes set``); the router follows them, and ingest folds the policy's revision into cache
keys so a policy change never serves answers computed under the old one.

Values are JSON, so the standard ``nats`` CLI shows them (``nats kv get natriton_models mobilenet_v2``).
Files the services need beside a model (a tokenizer) are too big for a KV value; the router puts them in
the object store ``natriton_model_files`` and the model's profile names them with their SHA-256.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from typing import Any, Generic, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from natriton.errors import ErrorCode, MeshError
from natriton.messages import Codec, ModelInfo, RoutePolicy
from natriton.profiles import ModelFile
from natriton.subjects import MODEL_FILES_BUCKET, MODELS_BUCKET, ROUTES_BUCKET

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


def decode_value(codec: Codec[T], value: bytes) -> T:
    """A KV value: JSON (what the mesh writes), or msgpack (what versions before 0.2 wrote)."""
    return codec.decode(value, json=value[:1] == b"{")


async def publish_model(kv: KeyValue, info: ModelInfo) -> None:
    """Write (or replace) one model's catalog entry (JSON)."""
    await kv.put(info.name, _MODEL_CODEC.encode(info, json=True))


async def put_route(kv: KeyValue, policy: RoutePolicy) -> int:
    """Write (or replace) one model's routing policy (JSON); returns the new revision."""
    return int(await kv.put(policy.model, _ROUTE_CODEC.encode(policy, json=True)))


async def open_model_files(nc: NATS, *, create: bool) -> ObjectStore:
    """The object store with the files beside models (tokenizers), created by the router."""
    js = nc.jetstream()
    while True:
        try:
            return await js.object_store(MODEL_FILES_BUCKET)
        except BucketNotFoundError:
            if create:
                return await js.create_object_store(bucket=MODEL_FILES_BUCKET)
            log.info("waiting for the object store %s (is the router up?)", MODEL_FILES_BUCKET)
            await asyncio.sleep(1.0)


async def publish_model_file(store: ObjectStore, file: ModelFile) -> bool:
    """Store one model file unless the same content is there already; True when it was written."""
    digest = "SHA-256=" + base64.urlsafe_b64encode(bytes.fromhex(file.sha256)).decode()
    with contextlib.suppress(Exception):
        if (await store.get_info(file.name)).digest == digest:
            return False
    await store.put(file.name, file.data)
    return True


class ModelFiles:
    """Files beside models, fetched from the object store on first use and kept by content digest."""

    def __init__(self, nc: NATS | None = None) -> None:
        self._nc = nc
        self._store: ObjectStore | None = None
        self._by_digest: dict[str, bytes] = {}

    def add(self, sha256: str, data: bytes) -> None:
        """Provide a file by hand (unit tests, tools)."""
        self._by_digest[sha256] = data

    async def get(self, name: str, sha256: str) -> bytes:
        """The file's bytes; ``unavailable`` if it cannot be fetched, ``internal`` if its digest is wrong."""
        if sha256 in self._by_digest:
            return self._by_digest[sha256]
        if self._nc is None:
            raise MeshError(ErrorCode.UNAVAILABLE, f"model file {name!r} is not available")
        try:
            if self._store is None:
                self._store = await self._nc.jetstream().object_store(MODEL_FILES_BUCKET)
            result = await self._store.get(name)
        except Exception as exc:
            raise MeshError(
                ErrorCode.UNAVAILABLE, f"model file {name!r} could not be fetched: {type(exc).__name__}"
            ) from exc
        data = bytes(result.data or b"")
        if hashlib.sha256(data).hexdigest() != sha256:
            raise MeshError(ErrorCode.UNAVAILABLE, f"model file {name!r} has changed; the catalog will catch up")
        self._by_digest[sha256] = data
        return data


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
                        self._entries[entry.key] = decode_value(self._codec, entry.value)
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
            known = ", ".join(n for n in self.names() if not self._entries[n].problem) or "none"
            raise MeshError(ErrorCode.NOT_FOUND, f"unknown model {_shown(name)} (known: {known})")
        if info.problem:
            raise MeshError(ErrorCode.NOT_FOUND, f"model {name!r} cannot be served: {info.problem}")
        if not version:
            version = info.latest_version
        if version not in info.versions:
            ready = list(info.versions)
            raise MeshError(
                ErrorCode.NOT_FOUND, f"model {name!r} has no ready version {_shown(version)} (ready: {ready})"
            )
        return info, version


class RouteTable(BucketView[RoutePolicy]):
    """Routing policies per model (absent = the latest version answers)."""

    bucket = ROUTES_BUCKET
    create = True

    def __init__(self) -> None:
        super().__init__(_ROUTE_CODEC)


def _shown(name: str, limit: int = 64) -> str:
    """A producer-supplied name, quoted and shortened for an error message."""
    return repr(name if len(name) <= limit else name[:limit] + "…")
