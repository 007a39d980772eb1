"""Model hot reload against real Triton in explicit model-control mode: ``natriton models load|unload`` make a
model or a new version appear in (and leave) the mesh without restarting anything."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from natriton.errors import ErrorCode
from natriton.messages import ErrorReply, InferResponse, RawOutputs, Reply
from natriton.tensors import to_array, to_tensor
from natriton_client.aio import MeshClient
from natriton_dev.stack import LocalStack
from tests.integration.conftest import REPO_MODELS, TEST_MODELS

pytestmark = pytest.mark.asyncio(loop_scope="session")
DATA = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


@pytest.fixture(scope="module")
def reload_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack of its own: ``noop`` in the repository but not loaded, ``versioned`` (a copy) with version 1 only."""
    workdir: Path = tmp_path_factory.mktemp("hot_reload")
    repository = workdir / "models"
    repository.mkdir()
    (repository / "noop").symlink_to(REPO_MODELS / "noop", target_is_directory=True)
    growing = repository / "versioned"
    growing.mkdir()
    shutil.copy(TEST_MODELS / "versioned" / "config.pbtxt", growing)
    shutil.copytree(TEST_MODELS / "versioned" / "1", growing / "1", ignore=shutil.ignore_patterns("__pycache__"))
    env = {"NATRITON_CATALOG_REFRESH_S": "600"}  # only the control endpoint changes the catalog in these tests
    with LocalStack(
        workdir, model_repository=repository, service_env=env, model_control_mode="explicit", load_models=("versioned",)
    ) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def mesh(reload_stack: LocalStack) -> AsyncIterator[MeshClient]:
    client = await MeshClient.connect(reload_stack.nats_url)
    yield client
    await client.close()


def natriton(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    """The operators' CLI as a separate process."""
    command = [str(Path(sys.executable).parent / "natriton"), *args, "--nats-url", stack.nats_url, "--json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATRITON_")}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def control(stack: LocalStack, action: str, model: str) -> dict[str, Any]:
    done = natriton(stack, "models", action, model)
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    assert document["ok"] and document["action"] == action and document["model"] == model
    return document


def catalog(stack: LocalStack) -> dict[str, dict[str, Any]]:
    done = natriton(stack, "models")
    assert done.returncode == 0, done.stderr
    return {m["name"]: m for m in json.loads(done.stdout)["models"]}


async def ask_noop(client: MeshClient) -> Reply:
    data = np.zeros((1, 16), dtype=np.uint8)
    return await client.infer("noop", tensors=[to_tensor("DATA", data)], use_cache=False, timeout_s=10)


async def eventually_answered(ask: Any) -> Reply:
    """Retry for a few seconds until the mesh answers (the catalog reaches ingest within milliseconds)."""
    deadline = time.monotonic() + 5.0
    while True:
        reply: Reply = await ask()
        if isinstance(reply, InferResponse) or time.monotonic() > deadline:
            return reply
        await asyncio.sleep(0.1)


def is_not_found(reply: Reply) -> bool:
    return isinstance(reply, ErrorReply) and reply.code == ErrorCode.NOT_FOUND


async def test_load_and_unload_without_restarts(reload_stack: LocalStack, mesh: MeshClient) -> None:
    pids = reload_stack.pids()
    assert "noop" not in catalog(reload_stack)
    assert is_not_found(await ask_noop(mesh))

    loaded = control(reload_stack, "load", "noop")
    assert loaded["ready_versions"] == ["1"]
    assert [(s["version"], s["state"]) for s in loaded["states"]] == [("1", "READY")]
    reply = await eventually_answered(lambda: ask_noop(mesh))
    assert isinstance(reply, InferResponse), reply
    assert isinstance(reply.result, RawOutputs)
    assert int(to_array(reply.result.tensors[0])[0, 0]) == 16
    assert catalog(reload_stack)["noop"]["versions"] == ["1"]

    unloaded = control(reload_stack, "unload", "noop")
    assert unloaded["ready_versions"] == []
    assert all(s["state"] != "READY" for s in unloaded["states"])
    assert "noop" not in catalog(reload_stack), "an unloaded model leaves the catalog"
    await asyncio.sleep(0.3)
    assert is_not_found(await ask_noop(mesh))
    assert reload_stack.pids() == pids, "nothing restarted"


async def test_a_new_version_appears_on_reload(reload_stack: LocalStack, mesh: MeshClient) -> None:
    pids = reload_stack.pids()
    assert catalog(reload_stack)["versioned"]["versions"] == ["1"]
    directory = reload_stack.triton.model_repository / "versioned"
    shutil.copytree(directory / "1", directory / "2", ignore=shutil.ignore_patterns("__pycache__"))

    reloaded = control(reload_stack, "load", "versioned")
    assert reloaded["ready_versions"] == ["1", "2"]
    assert catalog(reload_stack)["versioned"]["versions"] == ["1", "2"]

    async def ask_v2() -> Reply:
        return await mesh.infer("versioned", tensors=[to_tensor("DATA", DATA)], version="2", use_cache=False)

    reply = await eventually_answered(ask_v2)
    assert isinstance(reply, InferResponse) and reply.version == "2", reply
    assert isinstance(reply.result, RawOutputs)
    assert np.allclose(to_array(reply.result.tensors[0]), DATA * 2)
    assert reload_stack.pids() == pids


async def test_errors_are_typed_and_one_line(reload_stack: LocalStack) -> None:
    done = natriton(reload_stack, "models", "load", "no_such_model")
    assert done.returncode == 11, (done.returncode, done.stderr)  # not_found
    assert done.stderr.strip().splitlines() == [
        "error: not_found: no model 'no_such_model' in Triton's model repository"
    ]
    assert json.loads(done.stdout)["ok"] is False
    bad = natriton(reload_stack, "models", "unload", "../etc")
    assert bad.returncode == 10, bad.stderr  # invalid_argument
