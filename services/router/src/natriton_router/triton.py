"""The router's only door to Triton: model catalog reads and inference over gRPC (asyncio)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from natriton.messages import ModelInfo
from natriton.profiles import ModelFile, ReadFile
from natriton.telemetry import inject
from natriton.tensors import NUMPY_TO_TRITON
from natriton_router.logic import error_from_triton, model_info_from_triton

log = logging.getLogger(__name__)


class TritonControlError(Exception):
    """Triton refused a repository (load/unload) request; ``status`` is the gRPC ``StatusCode.X``."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class TritonGateway:
    """Wraps ``tritonclient.grpc.aio`` with typed errors and catalog helpers."""

    def __init__(self, url: str, *, timeout_s: float, load_timeout_s: float = 120.0) -> None:
        self.url = url
        self._client = grpcclient.InferenceServerClient(url=url)
        self._timeout_s = timeout_s
        self._load_timeout_s = load_timeout_s

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
        request_inputs = []
        for name, array in inputs.items():
            tensor = InferInput(name, list(array.shape), NUMPY_TO_TRITON[array.dtype])
            tensor.set_data_from_numpy(array)
            request_inputs.append(tensor)
        outputs = [InferRequestedOutput(n) for n in output_names]
        headers: dict[str, str] = {}
        inject(headers)
        try:
            result = await self._client.infer(
                model,
                request_inputs,
                model_version=version,
                outputs=outputs,
                client_timeout=self._timeout_s,
                headers=headers or None,
            )
        except InferenceServerException as exc:
            raise error_from_triton(exc.status(), exc.message() or str(exc)) from exc
        return {n: result.as_numpy(n) for n in output_names}

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
        """Close the gRPC channel."""
        await self._client.close()


def _file_reader(model_repository: str, model: str) -> ReadFile | None:
    """Reads files beside ``model`` in the model repository directory (None without a repository)."""
    if not model_repository:
        return None
    directory = Path(model_repository) / model

    def read(filename: str) -> bytes:
        return (directory / filename).read_bytes()

    return read
