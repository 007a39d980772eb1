"""What durability costs: acknowledged JetStream publishes with ``sync_interval: always`` vs the default, R1 vs R3.

Starts its own servers on free ports (data on this host's disk, under ``--workdir``): one ``nats-server``, and a
3-node cluster (processes on this host), each once with the default ``sync_interval`` (the server fsyncs every 2
minutes; until then an acknowledged write is in the OS page cache only, lost on power failure) and once with
``sync_interval: always`` (fsync before every acknowledgement). Against each, a file-storage stream configured like
``NATRITON_FRAMES_RELIABLE`` (1 or 3 replicas) gets 256 B messages (the size of a frame task) published with
``js.publish`` (waiting for the acknowledgement): one at a time, and from 64 concurrent publishers. Configurations
are measured in interleaved rounds (the order rotates), the median round is reported.

    python -m loadtests.jetstream_durability                       # ~1.5 minutes; writes the JSON below
    python -m loadtests.jetstream_durability --seconds 1 --rounds 1 --out /tmp/jsd.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import numpy as np
import uvloop
from nats.aio.client import Client

from loadtests.runtime_choice.bench import machine_info
from natriton.frames import stream_config
from natriton.messages import StreamMode
from natriton_dev.servers import ClusterNode, NatsCluster, find_binary

REPO_ROOT = Path(__file__).resolve().parents[1]
PAYLOAD_BYTES = 256
CONCURRENCY = (1, 64)
SYNC = {"default": "", "always": "always"}


@dataclasses.dataclass(frozen=True)
class Config:
    """One server setup under test."""

    name: str
    sync: str
    """``default`` or ``always``."""
    replicas: int
    """1: one server; 3: a 3-node cluster."""


CONFIGS = tuple(Config(f"R{r} sync {s}", s, r) for r in (1, 3) for s in SYNC)


@contextlib.contextmanager
def servers(config: Config, workdir: Path) -> Iterator[list[str]]:
    """The servers of ``config``, started; yields their client URLs."""
    sync = SYNC[config.sync]
    if config.replicas == 1:
        node = ClusterNode(workdir, name="n1", sync_interval=sync)
        node.start()
        try:
            yield [node.url]
        finally:
            node.stop()
        return
    cluster = NatsCluster(workdir, size=config.replicas, sync_interval=sync)
    cluster.start()
    try:
        yield cluster.urls
    finally:
        cluster.stop()


async def publish_for(js: Any, subject: str, seconds: float, concurrency: int) -> list[float]:
    """Publish with acknowledgement from ``concurrency`` publishers for ``seconds``; every publish's latency (s)."""
    payload = os.urandom(PAYLOAD_BYTES)
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def publisher() -> None:
        while (start := time.perf_counter()) < end:
            await js.publish(subject, payload, timeout=10)
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(publisher() for _ in range(concurrency)))
    return latencies


def summarise(latencies: list[float], seconds: float) -> dict[str, float]:
    """Throughput and latency percentiles (ms) of one measurement."""
    values = np.asarray(latencies) * 1000
    return {
        "msgs_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
        "count": len(latencies),
    }


async def measure(config: Config, workdir: Path, seconds: float, warmup: float) -> dict[str, dict[str, float]]:
    """One round of one configuration: fresh servers and stream, each concurrency level in turn."""
    with servers(config, workdir) as urls:
        nc: Client = await nats.connect(urls, name="durability-bench")
        try:
            js = nc.jetstream(timeout=10)
            stream = stream_config(StreamMode.RELIABLE, config.replicas)
            await js.add_stream(stream)
            subject = stream.subjects[0].replace("*", "bench") if stream.subjects else "bench"
            out = {}
            for concurrency in CONCURRENCY:
                await publish_for(js, subject, warmup, concurrency)
                latencies = await publish_for(js, subject, seconds, concurrency)
                out[f"inflight_{concurrency}"] = summarise(latencies, seconds)
            return out
        finally:
            await nc.close()


def median_round(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per concurrency level, the round with the median throughput."""
    out = {}
    for level in rounds[0]:
        ordered = sorted(rounds, key=lambda r: r[level]["msgs_per_s"])
        out[level] = ordered[(len(ordered) - 1) // 2][level]
    return out


def server_version() -> str:
    done = subprocess.run([find_binary("nats-server", ""), "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workroot = Path(args.workdir or tempfile.mkdtemp(prefix="jetstream-durability-"))
    try:
        return await _run(args, workroot)
    finally:
        if not args.workdir:
            shutil.rmtree(workroot, ignore_errors=True)


async def _run(args: argparse.Namespace, workroot: Path) -> dict[str, Any]:
    rounds: dict[str, list[dict[str, dict[str, float]]]] = {c.name: [] for c in CONFIGS}
    for number in range(args.rounds):
        order = CONFIGS[number % len(CONFIGS) :] + CONFIGS[: number % len(CONFIGS)]
        for config in order:
            workdir = workroot / f"round{number}-{config.name.replace(' ', '-')}"
            result = await measure(config, workdir, args.seconds, args.warmup)
            rounds[config.name].append(result)
            print(f"round {number + 1}: {config.name}: {json.dumps(result)}", file=sys.stderr, flush=True)
    results = {name: median_round(r) for name, r in rounds.items()}
    ratios = {}
    for replicas in (1, 3):
        default, always = results[f"R{replicas} sync default"], results[f"R{replicas} sync always"]
        for level in default:
            ratios[f"R{replicas} {level}: always/default throughput"] = round(
                always[level]["msgs_per_s"] / default[level]["msgs_per_s"], 3
            )
    return {
        "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "command": "python -m loadtests.jetstream_durability " + shlex.join(sys.argv[1:]),
        "machine": machine_info(),
        "disk": disk_of(workroot),
        "versions": {"nats-server": server_version(), "nats-py": importlib.metadata.version("nats-py")},
        "settings": {"seconds": args.seconds, "warmup": args.warmup, "rounds": args.rounds,
                     "payload_bytes": PAYLOAD_BYTES, "stream": "NATRITON_FRAMES_RELIABLE config (file, work queue)"},
        "results": results,
        "ratios": ratios,
        "rounds": rounds,
    }  # fmt: skip


def disk_of(path: Path) -> str:
    """The filesystem the stores were on (fsync cost depends on it)."""
    done = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    return " ".join(lines[-1].split()[:2]) if len(lines) > 1 else "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.5, help="measurement per concurrency level")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--workdir", help="where the servers keep their data (default: a new temp folder)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "loadtests" / "results" / "jetstream_durability.json")
    args = parser.parse_args(argv)
    load_start = [round(x, 2) for x in os.getloadavg()]
    result = uvloop.run(run(args))
    result["machine"]["loadavg_start"] = load_start
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, levels in result["results"].items():
        cells = "  ".join(f"{k}: {v['msgs_per_s']:.0f}/s p50 {v['p50_ms']} ms p99 {v['p99_ms']} ms"
                          for k, v in levels.items())  # fmt: skip
        print(f"{name:16} {cells}")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
