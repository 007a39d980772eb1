"""Results files, plots and the generated tables of ``docs/reliability.md`` (between marker comments)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS = REPO_ROOT / "loadtests" / "results"
DOC = REPO_ROOT / "docs" / "reliability.md"


def _answers_note(meta: Mapping[str, Any]) -> str:
    """How the run had answers made (runs before decision 0012 name no setting: postprocess made every one)."""
    env = meta.get("service_env") or {}
    if env.get("NATRITON_ROUTER_ANSWERS") == "false":
        return ", every answer made by postprocess (`NATRITON_ROUTER_ANSWERS=false`: each service holds requests)"
    return ""


def fault_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The fault table in Markdown."""
    lines = [
        "| fault | sent | ok | typed errors | **lost** | **duplicated** | ok p99 |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        errors = ", ".join(f"{n} `{code}`" for code, n in row["typed_errors"].items()) or "0"
        lines.append(
            f"| {row['fault']} | {row['sent']} | {row['ok']} ({row['ok'] / max(row['sent'], 1):.1%}) | {errors} | "
            f"**{row['lost']}** | **{row['duplicated']}** | {row['latency_p99_ms']:.0f} ms |"
        )
    return "\n".join(lines)


def soak_table(summary: Mapping[str, Any]) -> str:
    """Per process: memory and file descriptors after warm-up and at the end."""
    lines = [
        "| process | RSS after warm-up | RSS at the end | growth | fds after warm-up | fds at the end |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, p in sorted(summary.get("processes", {}).items()):
        lines.append(
            f"| {name} | {p['rss_mb_start']:.1f} MiB | {p['rss_mb_end']:.1f} MiB | {p['rss_growth_pct']:+.1f} % | "
            f"{p['fds_start']} | {p['fds_end']} |"
        )
    return "\n".join(lines)


def replace_section(text: str, name: str, body: str) -> str:
    """Replace what lies between ``<!-- name:begin -->`` and ``<!-- name:end -->``."""
    pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(\n<!-- {name}:end -->)", re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{DOC} has no {name} markers")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def write_faults(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], command: str) -> None:
    """faults.json, faults.png and the fault table in the doc."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {"command": command, "settings": dict(meta), "rows": list(rows)}
    (RESULTS / "faults.json").write_text(json.dumps(document, indent=2) + "\n")
    plot_faults(rows, meta, RESULTS / "faults.png")
    body = (
        f"Command: `{command}` — {meta['rate_per_s']:.0f} req/s for {meta['duration_s']:.0f} s per row, the fault at "
        f"t = {meta['fault_at_s']:.0f} s, a {meta['deadline_s']:.0f} s deadline, copies {meta['copies']}, model "
        f"`{meta['model']}`{_answers_note(meta)}. Results: `loadtests/results/faults.json`, a timeline per row: "
        "`loadtests/results/faults.png`."
        "\n\n" + fault_table(rows)
    )
    DOC.write_text(replace_section(DOC.read_text(), "faults", body))


def write_soak(result: Mapping[str, Any], command: str) -> None:
    """soak.json, soak.png and the soak table in the doc."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {"command": command, **result}
    (RESULTS / "soak.json").write_text(json.dumps(document, indent=2) + "\n")
    plot_soak(result, RESULTS / "soak.png")
    summary = result["summary"]
    s = result["settings"]
    failed = summary["failed_per_window"]
    body = (
        f"Command: `{command}` — {s['rate_per_s']:.0f} req/s (half new images, half cache hits) for "
        f"{s['minutes']:.0f} min, sampled every {s['sample_every_s']:.0f} s. Sent {summary['sent']}, ok "
        f"{summary['ok']}; failed per window: {failed}. Warm-up ends at the window at {summary['warm_up_t_s']:.0f} s. "
        "Results: `loadtests/results/soak.json`, `loadtests/results/soak.png`.\n\n" + soak_table(summary)
    )
    DOC.write_text(replace_section(DOC.read_text(), "soak", body))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_faults(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], path: Path) -> None:
    """One small timeline per row: answers ok and failed per second of sending, the fault marked."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.6 * len(rows)), sharex=True, squeeze=False)
    for ax, row in zip(axes[:, 0], rows, strict=True):
        seconds = [p["second"] for p in row["timeline"]]
        ax.bar(seconds, [p["ok"] for p in row["timeline"]], color="tab:green", width=0.9, label="ok")
        ax.bar(
            seconds,
            [p["failed"] for p in row["timeline"]],
            bottom=[p["ok"] for p in row["timeline"]],
            color="tab:red",
            width=0.9,
            label="failed",
        )
        ax.axvline(meta["fault_at_s"], color="black", linestyle="--", linewidth=1)
        ax.set_ylabel("req/s")
        ax.set_title(f"{row['fault']}: lost {row['lost']}, duplicated {row['duplicated']}", fontsize=9)
    axes[-1, 0].set_xlabel("second of the run (requests by the second they were sent)")
    axes[0, 0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_soak(result: Mapping[str, Any], path: Path) -> None:
    """RSS of every process over the soak."""
    plt = _pyplot()
    windows = result["windows"]
    fig, ax = plt.subplots(figsize=(8, 4))
    names = sorted({name for w in windows for name in w["processes"]})
    for name in names:
        ax.plot(
            [w["t_s"] / 60 for w in windows],
            [w["processes"].get(name, {}).get("rss_mb", float("nan")) for w in windows],
            label=name,
        )
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (MiB)")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Soak: resident memory per process")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
