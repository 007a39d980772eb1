"""Reading the mesh's NATS KV buckets once (the model catalog, the routing policies) for the commands."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from natriton_dev.cli.common import EXIT_FAILED, CliError, plain, shown_url


@dataclass(frozen=True, slots=True)
class KvEntry:
    """One current value of a bucket."""

    key: str
    value: bytes
    revision: int


async def open_kv(nc: NATS, bucket: str, *, timeout_s: float, create: bool = False) -> KeyValue | None:
    """The bucket, or None when it does not exist (and ``create`` is false); CliError when JetStream is off."""
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js.errors import BucketNotFoundError, NotFoundError, ServiceUnavailableError

    js = nc.jetstream(timeout=timeout_s)
    try:
        async with asyncio.timeout(timeout_s + 1.0):
            try:
                return await js.key_value(bucket)
            except (BucketNotFoundError, NotFoundError):
                if not create:
                    return None
                return await js.create_key_value(bucket=bucket, history=1)
    except (NoRespondersError, ServiceUnavailableError):
        raise CliError("JetStream is not enabled on the NATS server", EXIT_FAILED) from None
    except (TimeoutError, NatsTimeoutError):
        raise CliError(f"the NATS server did not answer a JetStream request for {bucket!r} in time") from None


async def read_entries(kv: KeyValue, *, timeout_s: float) -> list[KvEntry]:
    """Every current (not deleted) entry, sorted by key."""
    entries: dict[str, KvEntry] = {}
    async with asyncio.timeout(timeout_s + 1.0):
        watcher = await kv.watchall(ignore_deletes=True)
        try:
            async for entry in watcher:
                if entry is None:  # end of the current values
                    break
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    entries.pop(entry.key, None)
                    continue
                entries[entry.key] = KvEntry(entry.key, bytes(entry.value), int(entry.revision or 0))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
    return [entries[k] for k in sorted(entries)]


async def read_bucket(nc: NATS, bucket: str, *, timeout_s: float) -> list[KvEntry] | None:
    """Every current entry of ``bucket``; None when the bucket does not exist."""
    kv = await open_kv(nc, bucket, timeout_s=timeout_s)
    if kv is None:
        return None
    return await read_entries(kv, timeout_s=timeout_s)


def decode_model(entry: KvEntry) -> dict[str, Any]:
    """A catalog entry as plain data: every field of :class:`~natriton.messages.ModelInfo` (whatever it has now).

    Decoded with the mesh's own types when they match; otherwise the raw JSON with ``decode_error`` added, so a
    catalog written by a newer or older router is still shown.
    """
    from natriton.catalog import decode_value
    from natriton.messages import Codec, ModelInfo

    codec: Codec[ModelInfo] = Codec(ModelInfo)
    try:
        info = decode_value(codec, entry.value)
        data: dict[str, Any] = plain(info)
    except msgspec.MsgspecError as exc:
        try:
            raw = msgspec.json.decode(entry.value) if entry.value[:1] == b"{" else msgspec.msgpack.decode(entry.value)
        except msgspec.MsgspecError:
            raw = {}
        data = dict(raw) if isinstance(raw, dict) else {}
        data["decode_error"] = str(exc)
    data.setdefault("name", entry.key)
    data["revision"] = entry.revision
    return data


def model_kind(model: dict[str, Any]) -> str:
    """The model's kind: its profile's type, else its ``task``."""
    profile = model.get("profile")
    if isinstance(profile, dict) and profile.get("type"):
        return str(profile["type"])
    return str(model.get("task", ""))


def tensor_text(spec: Any) -> str:
    """``IMAGE UINT8 [224,224,3]`` for a tensor spec given as plain data."""
    if not isinstance(spec, dict):
        return str(spec)
    shape = ",".join(str(d) for d in spec.get("shape", ()))
    return f"{spec.get('name', '?')} {spec.get('datatype', '?')} [{shape}]"


async def read_catalog(nc: NATS, *, timeout_s: float) -> list[dict[str, Any]] | None:
    """The model catalog as plain data (None when the router has not created the bucket yet)."""
    from natriton.subjects import MODELS_BUCKET

    entries = await read_bucket(nc, MODELS_BUCKET, timeout_s=timeout_s)
    if entries is None:
        return None
    return [decode_model(e) for e in entries]


def no_catalog_message(url: str) -> str:
    """What to say when the catalog bucket is missing."""
    return f"no model catalog on {shown_url(url)} (the KV bucket natriton_models is missing: is the router up?)"
