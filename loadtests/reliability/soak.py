"""The soak: constant load for a long time; memory, file descriptors and errors of every process must stay flat.

Half the requests are new images (every hop and Triton), half repeat one of a few images (cache hits). Every
``sample_every_s`` the resident memory and open file descriptors of each service copy and server are read from
``/proc``, and the requests of the last window are counted by outcome.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.harness.stack import rss_mb
from loadtests.reliability.faults import MODEL, send_one, unique_images
from loadtests.reliability.tally import OK, Outcome
from natriton_client import AsyncClient, RetryPolicy
from natriton_dev.stack import LocalStack

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SoakRun:
    minutes: float = 20.0
    rate: float = 20.0
    sample_every_s: float = 30.0
    deadline_s: float = 5.0


def open_fds(pid: int) -> int:
    """Open file descriptors of one process (0 when it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def children(pid: int) -> list[int]:
    """The direct children of a process (0 when it is gone)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def sample(stack: LocalStack) -> dict[str, dict[str, float]]:
    """RSS and fds of every process of the stack, by name; Triton's python-backend model workers (its children)
    together as ``tritonserver model workers``."""
    processes = {name: {"rss_mb": rss_mb(pid), "fds": open_fds(pid)} for name, pid in stack.pids().items()}
    if stack.triton.pid is not None:
        workers = children(stack.triton.pid)
        processes["tritonserver model workers"] = {
            "rss_mb": round(sum(rss_mb(w) for w in workers), 1),
            "fds": sum(open_fds(w) for w in workers),
        }
    return processes


async def run_soak(workdir: Path, settings: SoakRun = SoakRun()) -> dict[str, Any]:
    """Run the soak; returns the samples and the per-process start/end comparison."""
    fresh = await asyncio.to_thread(unique_images, 2000, 7)
    repeated = fresh[:8]
    windows: list[dict[str, Any]] = []
    with LocalStack(workdir, load_models=(MODEL,), model_control_mode="explicit") as stack:
        client = await AsyncClient.connect(
            stack.nats_url, timeout_s=settings.deadline_s, retry=RetryPolicy(max_retries=0)
        )
        try:
            started = time.monotonic()
            end = started + settings.minutes * 60
            window: list[asyncio.Task[Outcome]] = []
            next_sample = started + settings.sample_every_s
            windows.append({"t_s": 0.0, "processes": sample(stack), "outcomes": {}})
            i = 0
            while time.monotonic() < end:
                due = started + i / settings.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                image = fresh[(i // 2) % len(fresh)] if i % 2 else repeated[i % len(repeated)]
                window.append(asyncio.ensure_future(send_one(client, image, f"soak-{i}", started)))
                i += 1
                if time.monotonic() >= next_sample:
                    done = await asyncio.gather(*window)
                    window = []
                    outcomes = Counter(o.outcome for o in done)
                    processes = await asyncio.to_thread(sample, stack)
                    t_s = round(time.monotonic() - started, 1)
                    windows.append({"t_s": t_s, "processes": processes, "outcomes": dict(outcomes)})
                    log.info("soak %.0f s: %s %s", t_s, dict(outcomes), processes)
                    next_sample += settings.sample_every_s
            done = await asyncio.gather(*window)
            windows.append(
                {
                    "t_s": round(time.monotonic() - started, 1),
                    "processes": sample(stack),
                    "outcomes": dict(Counter(o.outcome for o in done)),
                }
            )
        finally:
            await client.close()
    return {
        "settings": {
            "minutes": settings.minutes,
            "rate_per_s": settings.rate,
            "sample_every_s": settings.sample_every_s,
            "deadline_s": settings.deadline_s,
            "model": MODEL,
        },
        "windows": windows,
        "summary": summarize(windows),
    }


def summarize(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per process: RSS and fds after warm-up (the window at 10 % of the run) and at the end; errors per window."""
    if len(windows) < 3:
        return {}
    warm = windows[max(1, len(windows) // 10)]
    last = windows[-1]
    processes = {}
    for name, first in warm["processes"].items():
        final = last["processes"].get(name, {"rss_mb": 0.0, "fds": 0})
        growth = (final["rss_mb"] - first["rss_mb"]) / first["rss_mb"] * 100 if first["rss_mb"] else 0.0
        processes[name] = {
            "rss_mb_start": first["rss_mb"],
            "rss_mb_end": final["rss_mb"],
            "rss_growth_pct": round(growth, 1),
            "fds_start": first["fds"],
            "fds_end": final["fds"],
        }
    failed = [sum(n for k, n in w["outcomes"].items() if k != OK) for w in windows[1:]]
    sent = sum(sum(w["outcomes"].values()) for w in windows)
    return {
        "warm_up_t_s": warm["t_s"],
        "end_t_s": last["t_s"],
        "sent": sent,
        "ok": sum(w["outcomes"].get(OK, 0) for w in windows),
        "failed_per_window": failed,
        "processes": processes,
    }
