"""Supervision of the local stack, with real processes: what dies is reaped, reported and restarted on the same
ports; a deliberate stop is never undone; nothing outlives the stack (no process, zombie, Triton stub or
shared-memory region).

First plain processes under a :class:`Supervisor` (quick), then a supervised stack of its own that serves only
``noop`` (Triton is ready in about a second). The stack's tests run in file order: the last one stops it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from natriton.messages import InferResponse, Reply
from natriton.tensors import to_tensor
from natriton_client.aio import MeshClient
from natriton_dev.process import ManagedProcess, pids_with_command_line, process_state, wait_until
from natriton_dev.stack import LocalStack
from natriton_dev.supervisor import BackoffPolicy, EventKind, Supervisor, SupervisorEvent
from natriton_dev.triton import SHM_DIR
from tests.integration.conftest import model_repository_of

QUICK = BackoffPolicy(first_delay_s=0.1, max_delay_s=0.4, stable_after_s=5.0, give_up_after=3)


def gone(pid: int) -> bool:
    """Neither running nor a zombie: reaped."""
    return process_state(pid) is None


def zombie_children() -> list[int]:
    """Zombie children of this test process (nobody reaped them)."""
    zombies = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            zombies.append(int(entry.name))
    return zombies


def events_of(events: list[SupervisorEvent], kind: EventKind, name: str) -> list[SupervisorEvent]:
    return [e for e in events if e.kind is kind and e.name == name]


def wait_for_event(events: list[SupervisorEvent], kind: EventKind, name: str, timeout: float) -> SupervisorEvent:
    wait_until(lambda: bool(events_of(events, kind, name)), timeout, what=f"{kind} event of {name}")
    return events_of(events, kind, name)[-1]


# ------------------------------------------------------------------------------------------- plain processes
@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    watcher = Supervisor(QUICK, interval_s=0.05)
    watcher.start()
    yield watcher
    watcher.close()


def test_a_killed_process_is_reaped_reported_and_restarted(supervisor: Supervisor, tmp_path: Path) -> None:
    command = [sys.executable, "-c", "print('up', flush=True); import time; time.sleep(60)"]
    process = ManagedProcess(command, tmp_path, name="sleeper")
    seen: list[SupervisorEvent] = []
    supervisor.subscribe(seen.append)
    with process:
        supervisor.watch(process)
        first = process.pid
        assert first is not None
        wait_until(lambda: "up" in process.log_tail(), 10.0, what="the first run's output")
        os.kill(first, signal.SIGKILL)
        restarted = wait_for_event(seen, EventKind.RESTARTED, "sleeper", 10.0)
        assert gone(first)
        crashed = events_of(seen, EventKind.CRASHED, "sleeper")[0]
        assert crashed.returncode == -signal.SIGKILL and "up" in crashed.log_tail
        assert restarted.message == f"restarted sleeper (exit -9, SIGKILL) after 0.1 s (pid {process.pid})"
        assert process.is_running and process.pid != first
        assert supervisor.restarts() == {"sleeper": 1}
    assert [e.kind for e in seen] == [EventKind.CRASHED, EventKind.RESTARTED]


def test_a_deliberate_stop_right_after_a_kill_is_not_undone(supervisor: Supervisor, tmp_path: Path) -> None:
    """What the camera fault test does: kill -9 a copy, then stop() it at once to reap it."""
    process = ManagedProcess(["sleep", "60"], tmp_path)
    process.start()
    supervisor.watch(process)
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    time.sleep(0.07)  # the supervisor may see the crash first: its restart is then due in 0.1 s
    assert process.stop(timeout=5) == -signal.SIGKILL
    time.sleep(0.5)
    assert not process.is_running and process.returncode == -signal.SIGKILL
    assert supervisor.restarts() == {"sleep": 0}
    process.start()  # its owner starts it again: supervised as before
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    wait_until(lambda: supervisor.restarts() == {"sleep": 1}, 10.0, what="a restart")
    process.stop()


def test_a_process_that_keeps_failing_is_given_up(supervisor: Supervisor, tmp_path: Path) -> None:
    process = ManagedProcess(["sh", "-c", "echo failing; exit 3"], tmp_path, name="failing")
    seen: list[SupervisorEvent] = []
    supervisor.subscribe(seen.append)
    process.start()
    supervisor.watch(process)
    gave_up = wait_for_event(seen, EventKind.GAVE_UP, "failing", 10.0)
    assert gave_up.returncode == 3
    assert [e.kind for e in seen] == [EventKind.CRASHED, EventKind.RESTARTED] * 2 + [EventKind.GAVE_UP]
    assert [e.delay_s for e in seen if e.kind is EventKind.CRASHED] == [0.1, 0.2]
    assert supervisor.given_up() == ["failing"] and supervisor.restarts() == {"failing": 2}
    assert "failing" in gave_up.log_tail
    process.stop()


def test_children_die_with_their_launcher(tmp_path: Path) -> None:
    """``die_with_parent``: a launcher killed with SIGKILL (no cleanup of its own) leaves no child behind."""
    launcher = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from natriton_dev.process import ManagedProcess
        child = ManagedProcess(["sleep", "300"], Path({str(tmp_path)!r}))
        child.die_with_parent = True
        child.start()
        print(child.pid, flush=True)
        time.sleep(300)
        """
    )
    with subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert process_state(child) not in (None, "Z")
        parent.kill()
    wait_until(lambda: process_state(child) in (None, "Z"), 5.0, what="the orphan's end")


def test_a_child_outlives_the_thread_that_started_it(tmp_path: Path) -> None:
    """The kernel's parent-death signal follows the starting *thread*: children must not die with a worker thread
    (``asyncio.to_thread(process.start)``, a supervisor's restart)."""
    process = ManagedProcess(["sleep", "60"], tmp_path)
    process.die_with_parent = True
    starter = threading.Thread(target=process.start)
    starter.start()
    starter.join()
    time.sleep(0.3)
    assert process.is_running
    assert process.stop() == -signal.SIGTERM


# ------------------------------------------------------------------------------------------- a supervised stack
@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, list[SupervisorEvent]]]:
    workdir: Path = tmp_path_factory.mktemp("supervised")
    stack = LocalStack(
        workdir,
        model_repository=model_repository_of(workdir, "noop"),
        supervise=True,
        backoff=BackoffPolicy(first_delay_s=0.5, stable_after_s=5.0),
    )
    events: list[SupervisorEvent] = []
    stack.on_supervisor_event(events.append)
    with stack:
        yield stack, events


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def mesh(supervised: tuple[LocalStack, list[SupervisorEvent]]) -> AsyncIterator[MeshClient]:
    client = await MeshClient.connect(supervised[0].nats_url)
    yield client
    if not client.nc.is_closed:
        await client.close()


SEEN_PIDS: set[int] = set()
"""Every process of the supervised stack seen by the tests (the last one checks that none outlived it)."""


def remember(stack: LocalStack) -> None:
    SEEN_PIDS.update(stack.pids().values())
    SEEN_PIDS.update(stack.triton.stub_pids())


async def ask_noop(client: MeshClient) -> Reply:
    data = np.zeros((1, 16), dtype=np.uint8)
    return await client.infer("noop", tensors=[to_tensor("DATA", data)], use_cache=False, timeout_s=3)


async def answered_within(client: MeshClient, timeout_s: float) -> InferResponse:
    """Ask until the mesh answers (a restarted process needs a moment to be reached again)."""
    deadline = time.monotonic() + timeout_s
    while True:
        reply = await ask_noop(client)
        if isinstance(reply, InferResponse) or time.monotonic() > deadline:
            assert isinstance(reply, InferResponse), reply
            return reply
        await asyncio.sleep(0.2)


def health(url: str) -> int:
    with urllib.request.urlopen(f"{url}/healthz", timeout=2) as reply:
        return int(reply.status)


async def wait_async(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    await asyncio.to_thread(wait_until, predicate, timeout_s, 0.1, what)


async def test_a_killed_service_copy_is_restarted_and_serves_again(
    supervised: tuple[LocalStack, list[SupervisorEvent]], mesh: MeshClient
) -> None:
    stack, events = supervised
    await answered_within(mesh, 10.0)
    remember(stack)
    preprocess = stack.service("preprocess")
    first, url = preprocess.pid, preprocess.metrics_url
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await wait_async(lambda: bool(events_of(events, EventKind.RESTARTED, "preprocess")), 60.0, "preprocess restarted")
    crashed = events_of(events, EventKind.CRASHED, "preprocess")[-1]
    assert crashed.returncode == -signal.SIGKILL and crashed.log_tail.strip()
    assert gone(first)
    assert preprocess.is_running and preprocess.pid != first and stack.restarts()["preprocess"] == 1
    assert preprocess.metrics_url == url and health(url) == 200  # the same port as before
    await answered_within(mesh, 15.0)
    remember(stack)


async def test_a_killed_tritonserver_leaves_no_zombie_stub_or_region_and_comes_back(
    supervised: tuple[LocalStack, list[SupervisorEvent]], mesh: MeshClient
) -> None:
    stack, events = supervised
    triton = stack.triton
    first, grpc_url = triton.pid, triton.grpc_url
    stubs = triton.stub_pids()
    regions = {p.name for p in SHM_DIR.glob(f"{triton.shm_prefix}*")}
    assert first is not None and stubs and regions
    remember(stack)
    os.kill(first, signal.SIGKILL)
    await wait_async(lambda: bool(events_of(events, EventKind.CRASHED, "tritonserver")), 5.0, "the crash reported")
    assert gone(first), "a killed tritonserver must be reaped, not left a zombie"
    assert all(process_state(pid) in (None, "Z") for pid in stubs), "its stubs must be killed with it"
    await wait_async(lambda: bool(events_of(events, EventKind.RESTARTED, "tritonserver")), 60.0, "Triton restarted")
    assert not regions & {p.name for p in SHM_DIR.glob(f"{triton.shm_prefix}*")}, "the dead run's regions stay"
    assert triton.is_running and triton.pid != first and triton.grpc_url == grpc_url
    assert stack.restarts()["tritonserver"] == 1
    await answered_within(mesh, 30.0)  # the router reaches Triton again on the same port
    remember(stack)


async def test_stop_leaves_nothing_behind(
    supervised: tuple[LocalStack, list[SupervisorEvent]], mesh: MeshClient
) -> None:
    stack, events = supervised
    remember(stack)
    before = len(events)
    await mesh.close()  # before NATS goes away
    await asyncio.to_thread(stack.stop)
    assert len(events) == before, "a stop is no crash"
    running = [pid for pid in SEEN_PIDS if process_state(pid) not in (None, "Z")]
    assert not running, f"processes of the stack outlived it: {running}"
    assert not zombie_children(), "every process the stack started is reaped"
    assert not pids_with_command_line(str(stack.workdir)), "a process of the stack outlived it"
    assert not list(SHM_DIR.glob(f"{stack.triton.shm_prefix}*"))
    assert not stack.pids()
