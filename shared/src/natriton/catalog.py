"""The model catalog: which models exist, their versions, tensors and ``natriton.*`` parameters.

The router is the only service that talks to Triton. It reads each model's metadata and config from
Triton and publishes a :class:`~natriton.messages.ModelInfo` per model into the NATS KV bucket
``natriton_models``. The other services watch that bucket, so they learn about new models and
versions without restarts and without any Triton client of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
from nats.aio.client import Client as NATS
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from natriton.errors import ErrorCode, MeshError
from natriton.messages import Codec, ModelInfo
from natriton.subjects import MODELS_BUCKET

log = logging.getLogger(__name__)
_CODEC: Codec[ModelInfo] = Codec(ModelInfo)


async def open_bucket(nc: NATS, *, create: bool) -> KeyValue:
    """Bind to the catalog bucket, creating it when ``create`` (the router does), else waiting for it."""
    js = nc.jetstream()
    while True:
        try:
            return await js.key_value(MODELS_BUCKET)
        except BucketNotFoundError:
            if create:
                return await js.create_key_value(bucket=MODELS_BUCKET, history=1)
            log.info("waiting for the model catalog bucket %s (is the router up?)", MODELS_BUCKET)
            await asyncio.sleep(1.0)


async def publish_model(kv: KeyValue, info: ModelInfo) -> None:
    """Write (or replace) one model's entry."""
    await kv.put(info.name, _CODEC.encode(info))


class ModelCatalog:
    """A live, read-only view of the catalog bucket."""

    def __init__(self) -> None:
        self._models: dict[str, ModelInfo] = {}
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_models(cls, models: list[ModelInfo]) -> ModelCatalog:
        """A fixed catalog (unit tests, tools)."""
        catalog = cls()
        catalog._models = {m.name: m for m in models}
        return catalog

    async def start(self, nc: NATS) -> None:
        """Load the current entries, then keep following updates in the background."""
        kv = await open_bucket(nc, create=False)
        watcher = await kv.watchall()
        loaded = asyncio.get_running_loop().create_future()
        self._task = asyncio.get_running_loop().create_task(self._follow(watcher, loaded))
        await loaded

    async def _follow(self, watcher: KeyValue.KeyWatcher, loaded: asyncio.Future[None]) -> None:
        async for entry in watcher:
            if entry is None:  # end of the initial values
                if not loaded.done():
                    loaded.set_result(None)
                continue
            async with self._changed:
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    self._models.pop(entry.key, None)
                else:
                    try:
                        self._models[entry.key] = _CODEC.decode(entry.value)
                    except msgspec.MsgspecError:
                        log.error("catalog entry %r does not decode; ignoring it", entry.key)
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
        """Known model names."""
        return sorted(self._models)

    def get(self, name: str) -> ModelInfo | None:
        """The model's entry, if known."""
        return self._models.get(name)

    def require(self, name: str, version: str = "") -> tuple[ModelInfo, str]:
        """The model and the concrete version to use; typed ``not_found`` errors otherwise."""
        info = self._models.get(name)
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

    async def wait_for(self, name: str) -> ModelInfo:
        """Wait until ``name`` is in the catalog (wrap in ``asyncio.timeout`` to bound it)."""
        async with self._changed:
            await self._changed.wait_for(lambda: name in self._models)
        return self._models[name]
