"""The router's only door to Triton: model catalog reads and inference over gRPC (asyncio)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, InferInput, InferRequestedOutput, KeepAliveOptions
from tritonclient.utils import InferenceServerException

from natriton.messages import ModelInfo
from natriton.profiles import ModelFile, ReadFile
from natriton.telemetry import inject
from natriton.tensors import NUMPY_TO_TRITON
from natriton_router.logic import error_from_triton, model_info_from_triton
from natriton_router.settings import GrpcTls
from natriton_router.shared_memory import Region, SharedMemoryPool, batch_bytes, can_share

log = logging.getLogger(__name__)


class TritonControlError(Exception):
    """Triton refused a repository (load/unload) request; ``status`` is the gRPC ``StatusCode.X``."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


BALANCED_SCHEMES = ("dns:", "ipv4:", "ipv6:")
"""gRPC target schemes that may name several servers; the router balances its calls over them."""


def channel_args(url: str) -> list[tuple[str, Any]]:
    """gRPC channel options for ``url``: tritonclient's own defaults (unlimited message size, keepalive); reconnects
    at most 1 s apart (gRPC's default backoff grows to minutes, so a Triton back from a restart would wait); and
    round-robin load balancing when the target uses a gRPC name scheme (``dns:///triton:8001``, or a fixed list
    ``ipv4:10.0.0.1:8001,10.0.0.2:8001``), so one router spreads its calls over every Triton replica instead of
    pinning one connection."""
    keepalive = KeepAliveOptions()
    args: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    if url.startswith(BALANCED_SCHEMES):
        args.append(("grpc.lb_policy_name", "round_robin"))
    return args


class TritonGateway:
    """Wraps ``tritonclient.grpc.aio`` with typed errors and catalog helpers."""

    def __init__(
        self, url: str, *, timeout_s: float, load_timeout_s: float = 120.0, tls: GrpcTls | None = None
    ) -> None:
        """``tls``: a TLS channel (verifying Triton against ``tls.ca_file``, presenting ``tls.cert_file`` for
        mutual TLS); None: plaintext gRPC."""
        self.url = url
        secure: dict[str, Any] = {}
        if tls is not None:
            secure = {
                "ssl": True,
                "root_certificates": tls.ca_file or None,
                "private_key": tls.key_file or None,
                "certificate_chain": tls.cert_file or None,
            }
        self._client = grpcclient.InferenceServerClient(url=url, channel_args=channel_args(url), **secure)
        self._timeout_s = timeout_s
        self._load_timeout_s = load_timeout_s
        self.shared_memory: SharedMemoryPool | None = None
        """Regions batches are sent through when Triton shares this host (:meth:`use_shared_memory`)."""
        self.batches: Counter[str] = Counter()
        """Batches sent, by how the inputs travelled: ``shared_memory`` or ``grpc``."""

    async def use_shared_memory(self, owner: str) -> bool:
        """Send batches through system shared memory from now on, if Triton can map this process's regions (one
        host and IPC namespace) and the URL names one server (a region is registered with one server only)."""
        if self.url.startswith(BALANCED_SCHEMES):
            log.info("Triton URL %s balances over replicas: batches go over gRPC", self.url)
            return False
        pool = SharedMemoryPool(self._client, owner)
        if not await pool.probe():
            return False
        self.shared_memory = pool
        log.info("batches go to Triton through system shared memory")
        return True

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until Triton reports ready; raise TimeoutError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if await self._client.is_server_ready(client_timeout=2):
                    return
            except InferenceServerException:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"Triton at {self.url} not ready after {timeout_s:.0f} s")
            await asyncio.sleep(0.5)

    async def is_model_ready(self, model: str) -> bool:
        """Whether Triton says ``model`` is ready now (False when Triton does not answer)."""
        try:
            return bool(await self._client.is_model_ready(model, client_timeout=1))
        except InferenceServerException:
            return False

    async def read_catalog(self, model_repository: str = "") -> list[tuple[ModelInfo, tuple[ModelFile, ...]]]:
        """Every ready model, described from its config (tensors, batch size, typed profile), with the files
        beside it that the services need; files are read from ``model_repository`` (the directory Triton
        serves, mounted read-only) when it is given."""
        index: dict[str, Any] = await self._client.get_model_repository_index(as_json=True)
        versions: dict[str, list[str]] = {}
        for entry in index.get("models", []):
            if entry.get("state") == "READY":
                versions.setdefault(entry["name"], []).append(str(entry.get("version", "1")))
        models = []
        for name, ready in sorted(versions.items()):
            config: dict[str, Any] = await self._client.get_model_config(name, as_json=True)
            models.append(model_info_from_triton(config["config"], ready, _file_reader(model_repository, name)))
        return models

    async def infer(
        self, model: str, version: str, inputs: dict[str, np.ndarray[Any, Any]], output_names: tuple[str, ...]
    ) -> dict[str, np.ndarray[Any, Any]]:
        """One (batched) inference; Triton errors become typed MeshErrors.

        The current span (the batch's) goes along as gRPC metadata ``traceparent``, so that a Triton started with
        ``--trace-config mode=opentelemetry`` puts its own spans in the batch's trace.
        """
        arrays = list(inputs.values())
        pool = self.shared_memory
        region = await pool.acquire(batch_bytes(arrays)) if pool is not None and can_share(arrays) else None
        try:
            result = await self._infer_once(model, version, _inputs(inputs, region), output_names, region)
        except _UnknownRegion:  # Triton restarted and forgot our regions: register again; this batch goes by gRPC
            assert pool is not None and region is not None
            pool.forget_registrations()
            pool.release(region)
            region = None
            result = await self._infer_once(model, version, _inputs(inputs, None), output_names, None)
        finally:
            if region is not None and pool is not None:
                pool.release(region)
        self.batches["shared_memory" if region is not None else "grpc"] += 1
        return {n: result.as_numpy(n) for n in output_names}

    async def _infer_once(
        self,
        model: str,
        version: str,
        request_inputs: list[InferInput],
        output_names: tuple[str, ...],
        region: Region | None,
    ) -> Any:
        outputs = [InferRequestedOutput(n) for n in output_names]
        headers: dict[str, str] = {}
        inject(headers)
        try:
            return await self._client.infer(
                model,
                request_inputs,
                model_version=version,
                outputs=outputs,
                client_timeout=self._timeout_s,
                headers=headers or None,
            )
        except InferenceServerException as exc:
            message = exc.message() or str(exc)
            if region is not None and "shared memory region" in message.lower():
                raise _UnknownRegion(message) from exc
            raise error_from_triton(exc.status(), message) from exc

    async def load_model(self, model: str) -> None:
        """Load (or reload, picking up added or removed versions) ``model`` from Triton's repository."""
        try:
            await self._client.load_model(model, client_timeout=self._load_timeout_s)
        except InferenceServerException as exc:
            raise TritonControlError(exc.status() or "", exc.message() or str(exc)) from exc

    async def unload_model(self, model: str) -> None:
        """Unload every version of ``model``."""
        try:
            await self._client.unload_model(model, client_timeout=self._load_timeout_s)
        except InferenceServerException as exc:
            raise TritonControlError(exc.status() or "", exc.message() or str(exc)) from exc

    async def repository_index(self) -> list[dict[str, Any]]:
        """Every model version in Triton's repository (loaded or not): name, version, state, reason."""
        index: dict[str, Any] = await self._client.get_model_repository_index(as_json=True)
        return list(index.get("models", []))

    async def close(self) -> None:
        """Unregister and free the shared-memory regions; close the gRPC channel."""
        if self.shared_memory is not None:
            await self.shared_memory.close()
        await self._client.close()


class _UnknownRegion(Exception):
    """Triton does not know a shared-memory region the call named."""


def _inputs(inputs: dict[str, np.ndarray[Any, Any]], region: Region | None) -> list[InferInput]:
    """The request's inputs: their bytes in the call, or (with ``region``) copied into the region and named."""
    request_inputs = []
    placed = region.place(list(inputs.values())) if region is not None else []
    for i, (name, array) in enumerate(inputs.items()):
        tensor = InferInput(name, list(array.shape), NUMPY_TO_TRITON[array.dtype])
        if region is not None:
            offset, size = placed[i]
            tensor.set_shared_memory(region.name, size, offset)
        else:
            tensor.set_data_from_numpy(array)
        request_inputs.append(tensor)
    return request_inputs


def _file_reader(model_repository: str, model: str) -> ReadFile | None:
    """Reads files beside ``model`` in the model repository directory (None without a repository)."""
    if not model_repository:
        return None
    directory = Path(model_repository) / model

    def read(filename: str) -> bytes:
        return (directory / filename).read_bytes()

    return read
