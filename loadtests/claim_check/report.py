"""Markdown table and PNG of a claim-check result (the dict ``bench.main`` writes as JSON)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

PROCS = ("producer", "consumer", "nats-server", "redis-server")
LABELS = {
    "inline": "inline (bytes in the NATS message)",
    "redis": "Redis SET PX / GET",
    "stream-mem": "JetStream stream, memory, direct get",
    "stream-file": "JetStream stream, file, direct get",
    "objstore-mem": "NATS object store, memory",
    "objstore-file": "NATS object store, file",
    "shm-file": "/dev/shm file per frame (mmap + copy)",
    "shm-ring": "/dev/shm ring of slots (copy in, copy out)",
}


def _n(x: float | None, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{digits}f}"


def _size(n: int) -> str:
    return f"{n:,} B ({n / 1024:,.0f} KB)" if n < 1024 * 1024 else f"{n:,} B ({n / 2**20:.2f} MiB)"


def _find(rows: list[dict[str, Any]], **kw: Any) -> dict[str, Any] | None:
    return next((r for r in rows if all(r[k] == v for k, v in kw.items())), None)


def markdown(res: dict[str, Any], png: str | None = None) -> str:
    """The report."""
    m, st, media = res["machine"], res["settings"], res["media"]
    rows: list[dict[str, Any]] = res["rows"]
    out = [
        "# Claim-check store: where a frame waits while its reference travels",
        "",
        f"- date: {res['date']}; wall time {res['elapsed_s']} s",
        f"- command: `{res['command']}`",
        f"- machine: {m['cpu_model']}, {m['cpu_count']} CPUs, {m['platform']}, Python {m['python']}; load average "
        f"at start {m['loadavg_start']}, at end {m.get('loadavg_end')}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in res['versions'].items())}",
        f"- media: {media['source']}; "
        + ", ".join(f"{k} {_size(v)}" for k, v in media["bytes"].items())
        + (
            f"; JPEG q{media['jpeg_quality']} of every frame of the video: "
            f"{media['jpeg_sizes_all_frames']['min']:,} to {media['jpeg_sizes_all_frames']['max']:,} B, "
            f"median {media['jpeg_sizes_all_frames']['median']:,} B"
            if media.get("jpeg_sizes_all_frames")
            else ""
        ),
        f"- method: a producer process stores each payload and publishes a ~60 B reference on core NATS; a "
        "consumer process fetches the bytes (into a uint8 array) in a task per reference and acknowledges; the "
        "producer keeps 1 or 16 payloads in flight (closed loop). Per cell and store "
        f"{st['slices']} slices of {st['duration']} s (warm-up {st['warmup']} s, then {st['rewarm']} s), the "
        "stores' order rotating between slices. frames/s = median over slices of completions / window; latency = "
        "producer starts storing → consumer has the bytes (CLOCK_MONOTONIC in both), pooled; CPU = utime+stime "
        "(10 ms ticks) of each process over the windows / frames completed. Everything a slice stored is purged "
        "after its window, so deletion and expiry are NOT in these CPU numbers: see the next section. TTL in the "
        f"loop {st['loop_ttl_s']} s (never reached).",
        "",
    ]
    if png:
        out += [f"![frames/s and CPU per frame]({png})", ""]
    payloads = list(dict.fromkeys(r["payload"] for r in rows))
    for payload in payloads:
        sel = [r for r in rows if r["payload"] == payload]
        out += [
            f"## {payload}: {_size(sel[0]['payload_bytes'])}",
            "",
            "| in flight | store | frames/s | vs inline | p50 ms | p99 ms | CPU µs/frame: producer | consumer "
            "| nats-server | redis-server | total | errors / lost |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sel:
            base = _find(sel, variant="inline", inflight=r["inflight"])
            vs = f"{r['fps'] / base['fps']:.2f}x" if base and base["fps"] else "-"
            cpu = r["cpu_us_per_frame"]
            out.append(
                f"| {r['inflight']} | {r['variant']} | {_n(r['fps'])} | {vs} | {_n(r['p50_ms'], 3)} | "
                f"{_n(r['p99_ms'], 3)} | " + " | ".join(_n(cpu[p]) for p in (*PROCS, "total")) + f" | "
                f"{r['errors']} / {r['lost']} |"
            )
        out.append("")
    dels = res.get("delete_expiry") or []
    if dels:
        n, size = dels[0]["n"], dels[0]["payload_bytes"]
        ttl = next((d["expiry"]["ttl_s"] for d in dels if "expiry" in d), None)
        out += [
            f"## Delete vs TTL expiry ({n} raw frames of {size:,} B per store, one client, one at a time)",
            "",
            "Streams are deleted with `no_erase` (one `$JS.API.STREAM.MSG.DELETE` request); the extra row is "
            "nats-py's `delete_msg`, which omits `no_erase`, so the server overwrites the message before removing it. "
            "Server CPU from `/proc/<pid>/task/*/schedstat` (ns), not ticks. Expiry: server CPU from the last store "
            "until the store holds nothing, minus its idle rate with the same polling (every 20 ms); "
            f'TTL {ttl} s. "gone" = seconds after the first item was due until the last one is gone.',
            "",
            "| store | delete: client wait µs p50 | client CPU µs | server CPU µs | expiry: server CPU µs | "
            "gone s after due | idle server CPU ms/s |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for d in dels:
            de, ex = d["delete"], d.get("expiry") or {}
            out.append(
                f"| {d['variant']} | {_n(de['client_wall_us_p50'])} | {_n(de['client_cpu_us'])} | "
                f"{_n(de['server_cpu_us'])} | {_n(ex.get('server_cpu_us')) if ex else 'no TTL'} | "
                f"{_n(ex.get('all_gone_after_first_expiry_due_s'), 2) if ex else '-'} | "
                f"{_n(ex.get('idle_server_cpu_ms_per_s'), 2) if ex else '-'} |"
            )
            if er := d.get("delete_erase"):
                out.append(
                    f"| {d['variant']}, nats-py `delete_msg` (secure erase) | {_n(er['client_wall_us_p50'])} | "
                    f"{_n(er['client_cpu_us'])} | {_n(er['server_cpu_us'])} | | | |"
                )
        late = [d["variant"] for d in dels if (d.get("expiry") or {}).get("expired_while_storing")]
        if late:
            out += ["", f"Storing took longer than the TTL for {', '.join(late)}: their expiry CPU is too low."]
        left = [f"{d['variant']} {d['delete']['left_after']}" for d in dels if d["delete"]["left_after"]]
        if left:
            out += ["", f"Messages left in the store after every explicit delete: {', '.join(left)} (object store: "
                    "one delete marker per object)."]  # fmt: skip
        out.append("")
    codec = res.get("jpeg_codec")
    if codec:
        out += [
            f"## JPEG codec (Pillow, q90, the frame above: {codec['jpeg_bytes']:,} B)",
            "",
            "| operation | wall µs p50 | CPU µs p50 |",
            "|---|---:|---:|",
        ]
        for op in ("encode_q90", "decode", "decode_half_draft"):
            out.append(f"| {op} | {_n(codec[op]['wall_us_p50'])} | {_n(codec[op]['cpu_us_p50'])} |")
        out.append("")
        out += raw_vs_jpeg(rows, codec)
    rs = res.get("redis_stats") or {}
    errs = sum(r["errors"] + r["lost"] for r in rows)
    out += [
        f"Errors or lost payloads in all cells: {errs or 'none'}. Redis evicted keys: {rs.get('evicted_keys')}.",
        "",
    ]
    return "\n".join(out)


def raw_vs_jpeg(rows: list[dict[str, Any]], codec: dict[str, Any]) -> list[str]:
    """Per store at the highest in-flight level: raw vs JPEG with the codec's CPU added."""
    if not (_find(rows, payload="raw") and _find(rows, payload="jpeg")):
        return []
    top = max(r["inflight"] for r in rows)
    enc, dec = codec["encode_q90"]["cpu_us_p50"], codec["decode"]["cpu_us_p50"]
    out = [
        f"## Raw or JPEG? ({top} in flight; JPEG adds encode {enc:,.0f} µs in the producer and decode "
        f"{dec:,.0f} µs in the consumer)",
        "",
        "| store | raw frames/s | JPEG frames/s (transport only) | raw CPU µs/frame, all processes | "
        "JPEG CPU µs/frame + encode + decode |",
        "|---|---:|---:|---:|---:|",
    ]
    for raw in (r for r in rows if r["payload"] == "raw" and r["inflight"] == top):
        jpg = _find(rows, payload="jpeg", inflight=top, variant=raw["variant"])
        if not jpg:
            continue
        jt = jpg["cpu_us_per_frame"]["total"]
        out.append(
            f"| {raw['variant']} | {_n(raw['fps'])} | {_n(jpg['fps'])} | {_n(raw['cpu_us_per_frame']['total'])} | "
            f"{_n(jt)} + {enc:,.0f} + {dec:,.0f} = {_n(jt + enc + dec)} |"
        )
    return [*out, ""]


def plot(res: dict[str, Any], path: Path) -> None:
    """Top: frames/s per store (log scale) for each payload, one bar per in-flight level. Bottom: CPU µs per frame
    per process at the highest in-flight level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: list[dict[str, Any]] = res["rows"]
    payloads = list(dict.fromkeys(r["payload"] for r in rows))
    if not payloads:
        return
    inflights = sorted({r["inflight"] for r in rows})
    top = inflights[-1]
    fig, axes = plt.subplots(2, len(payloads), figsize=(6 * len(payloads), 8.5), squeeze=False)
    proc_colors = ("#4466cc", "#22aa77", "#888888", "#cc3333")
    for col, payload in enumerate(payloads):
        sel = [r for r in rows if r["payload"] == payload]
        variants = list(dict.fromkeys(r["variant"] for r in sel))
        ax = axes[0][col]
        width = 0.8 / len(inflights)
        for k, n in enumerate(inflights):
            vals = [(_find(sel, variant=v, inflight=n) or {}).get("fps", 0) for v in variants]
            xs = [i + (k - (len(inflights) - 1) / 2) * width for i in range(len(variants))]
            bars = ax.bar(xs, vals, width, label=f"{n} in flight", alpha=0.55 + 0.45 * k / max(1, len(inflights) - 1))
            for b, v in zip(bars, vals, strict=True):
                ax.annotate(f"{v:,.0f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                            va="bottom", fontsize=7, rotation=90)  # fmt: skip
        ax.set_yscale("log")
        ax.set_xticks(range(len(variants)), variants, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{payload}: {sel[0]['payload_bytes']:,} B — frames/s")
        ax.legend(fontsize=8)
        ax = axes[1][col]
        bottom = [0.0] * len(variants)
        for proc, color in zip(PROCS, proc_colors, strict=True):
            vals = []
            for v in variants:
                r = _find(sel, variant=v, inflight=top)
                x = r["cpu_us_per_frame"][proc] if r else 0.0
                vals.append(0.0 if math.isnan(x) else x)
            ax.bar(range(len(variants)), vals, 0.6, bottom=bottom, label=proc, color=color)
            bottom = [a + b for a, b in zip(bottom, vals, strict=True)]
        ax.set_ylim(0, max(bottom) * 1.08 or 1)
        ax.set_xticks(range(len(variants)), variants, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{payload}: CPU µs per frame at {top} in flight")
        ax.legend(fontsize=8)
    m = res["machine"]
    fig.suptitle(f"Claim-check stores — {res['date']} — {m['cpu_model']}, {m['cpu_count']} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
