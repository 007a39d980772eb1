"""Natriton load-test suite: every scenario in ``loadtests/scenarios/`` against a local mesh, with baselines.

Starts nats-server, redis-server, tritonserver (only the models the scenarios use) and the four services, runs the
scenarios in order (``order`` in each file), then writes ``loadtests/results/<scenario>.json``,
``loadtests/results/summary.json``, PNG plots, and regenerates ``docs/benchmarks.md``.

    python -m loadtests.bench                          # the whole suite (~5-6 minutes on a 2-core host)
    python -m loadtests.bench --time-scale 0.3         # every duration x0.3 (a quick look)
    python -m loadtests.bench --only mesh_vs_triton,cache_hit --no-docs
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import shlex
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import nats
import uvloop

from loadtests.ensemble import report as ensemble_report
from loadtests.ensemble.repository import MODELS as ENSEMBLE_MODELS
from loadtests.ensemble.repository import combined_repository
from loadtests.harness import report
from loadtests.harness.baselines import ensure_perf_analyzer
from loadtests.harness.loadgen import MeshRequester, closed_loop
from loadtests.harness.payloads import body_factory
from loadtests.harness.progress import Progress
from loadtests.harness.runners import RUNNERS, Context, closed_loop_capacity, scenario_config
from loadtests.harness.scenario import Scenario, load_scenarios
from loadtests.harness.stack import MeshStack
from loadtests.runtime_choice.bench import machine_info
from loadtests.video import report as video_report

# grpc (tritonclient, imported later) logs a line for each fork while its threads run: the bench forks processes
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
RESULTS = Path(__file__).resolve().parent / "results"
DOC = REPO_ROOT / "docs" / "benchmarks.md"
STARTUP_S = 45.0  # stack start + warm-up + stop, for the time estimate
log = logging.getLogger("loadtests.bench")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", type=Path, default=SCENARIOS, help="folder of scenario .toml files")
    p.add_argument("--only", default="", help="comma list of scenario names to run (default: all)")
    p.add_argument("--skip", default="", help="comma list of scenario names to leave out")
    p.add_argument("--time-scale", type=float, default=1.0, help="multiply every duration and warm-up by this")
    p.add_argument("--budget-s", type=float, default=570.0, help="warn when the planned run is longer than this")
    p.add_argument(
        "--capacity",
        type=float,
        default=None,
        help="mesh capacity (req/s) for rate_factor phases "
        "when mesh_vs_triton does not run (default: a short closed-loop measurement)",
    )
    p.add_argument("--no-perf-analyzer", action="store_true", help="skip Triton's perf_analyzer")
    p.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    p.add_argument("--out-dir", type=Path, default=RESULTS, help="where the JSON and PNG results go")
    p.add_argument("--doc", type=Path, default=DOC, help="the Markdown report to regenerate")
    p.add_argument("--model-repository", type=Path, default=REPO_ROOT / "model_repository")
    p.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for every service (repeatable), e.g. OTEL_TRACES_SAMPLER=always_off",
    )
    p.add_argument("--workdir", type=Path, default=None, help="logs of every process (default: a temp folder)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: rebuild summary.json, the plots and the doc from the JSON results in --out-dir",
    )
    return p.parse_args(argv)


def plan(scenarios: list[Scenario]) -> float:
    """Estimated seconds of the run."""
    return STARTUP_S + sum(s.planned_seconds() + 3.0 for s in scenarios)


async def warm_up(ctx: Context, scenarios: list[Scenario]) -> dict[str, Any]:
    """A few requests per model (first inferences are slow) and a sanity check of a real photo's label."""
    out: dict[str, Any] = {}
    for sc in scenarios:
        if sc.kind == "noop_vs_raw_nats":
            from loadtests.harness.payloads import noop_body

            body = noop_body(sc.model, sc.payload_bytes[0])

            def bodies(_i: int, body: bytes = body) -> tuple[bytes, str]:
                return body, ""
        elif sc.payload.tensor is not None or sc.payload.image is not None:
            bodies = body_factory(sc.model, sc.payload, ctx.photos)
        else:
            continue
        await closed_loop(ctx.requester, bodies, concurrency=2, warmup_s=0.0, duration_s=1.0, deadline_ms=30_000)
    photo = "coffee.jpg"
    if photo in ctx.photos and any(s.model == "mobilenet_v2" for s in scenarios):
        from natriton.messages import InferResponse
        from natriton_client.aio import MeshClient

        reply = await MeshClient(ctx.nc).infer("mobilenet_v2", image=ctx.photos[photo], top_k=1, use_cache=False)
        if isinstance(reply, InferResponse) and hasattr(reply.result, "classes"):
            top = reply.result.classes[0]
            out["sanity"] = f"{photo} -> {top.label} {top.score:.3f}"
        else:
            out["sanity"] = f"{photo} -> {reply}"
    return out


async def measure_capacity(ctx: Context, scenarios: list[Scenario]) -> None:
    """Capacity for ``rate_factor`` phases when mesh_vs_triton did not run: 6 s closed loop at 16 in flight."""
    sc = next((s for s in scenarios if s.kind == "open_loop" and s.payload.tensor is not None), None)
    sc = sc or next((s for s in scenarios if s.kind == "open_loop"), None)
    if sc is None:
        return
    ctx.capacity = await closed_loop_capacity(ctx, sc)
    ctx.capacity_source = f"closed loop x16 for 6 s ({sc.payload.describe()}, no cache)"


async def run_all(
    stack: MeshStack, scenarios: list[Scenario], args: argparse.Namespace, workdir: Path, meta: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Every scenario in order; a failing scenario is recorded and the rest still run."""
    from natriton_dev.images import sample_photos

    nc = await nats.connect(stack.nats_url, name="natriton-loadtest", pending_size=16 * 1024 * 1024)
    requester = MeshRequester(nc)
    await requester.start()
    ctx = Context(stack, nc, requester, sample_photos(), Progress(enabled=not args.quiet), workdir)
    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    try:
        if any(s.perf_analyzer for s in scenarios) and not args.no_perf_analyzer:
            binary, libdir, why = ensure_perf_analyzer()
            ctx.perf_analyzer = (binary, libdir) if binary and libdir else None
            ctx.perf_analyzer_error = why
            if why:
                ctx.progress.note(f"perf_analyzer unavailable: {why}")
        elif args.no_perf_analyzer:
            ctx.perf_analyzer_error = "skipped (--no-perf-analyzer)"
        meta.update(await warm_up(ctx, scenarios))
        ctx.progress.note(f"warm-up done: {meta.get('sanity', '')}")
        if args.capacity:
            ctx.capacity, ctx.capacity_source = args.capacity, "--capacity"
        for sc in scenarios:
            if (sc.uses_capacity or sc.ingest_max_concurrency == "auto") and ctx.capacity is None:
                await measure_capacity(ctx, scenarios)
            started = time.monotonic()
            ctx.progress.note(f"== {sc.name} ({sc.kind}): {sc.description.splitlines()[0] if sc.description else ''}")
            try:
                result = await RUNNERS[sc.kind](ctx, sc)
            except Exception as exc:  # record it; the other scenarios still run
                failures[sc.name] = f"{type(exc).__name__}: {exc}"
                ctx.progress.note(f"   {sc.name} FAILED: {failures[sc.name]}")
                log.debug("scenario %s failed", sc.name, exc_info=True)
                result = {"error": failures[sc.name], "traceback": traceback.format_exc()}
                with contextlib.suppress(Exception):
                    stack.check_alive()
                    await requester.wait_idle(15)
            result["elapsed_s"] = round(time.monotonic() - started, 1)
            results[sc.name] = result
            write_json(args.out_dir / f"{sc.name}.json", {"scenario": scenario_config(sc), "result": result, **meta})
    finally:
        if ctx.triton is not None:
            with contextlib.suppress(Exception):
                await ctx.triton.close()
        await requester.close()
        with contextlib.suppress(Exception):
            await nc.drain()
    return results, failures


def write_json(path: Path, data: Any) -> None:
    """Pretty JSON with a trailing newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the suite; exit 1 if a scenario failed (missed targets are results, not failures)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks (stop every process)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    scenarios = [s.scaled(args.time_scale) for s in load_scenarios(args.scenarios, only) if s.name not in skip]
    if not scenarios:
        print("no scenario selected", file=sys.stderr)
        return 2
    if args.report_only:
        return report_only(scenarios, args)
    env = dict(kv.split("=", 1) for kv in args.service_env)
    command = "python -m loadtests.bench" + (" " + shlex.join(sys.argv[1:]) if argv is None and sys.argv[1:] else "")
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": machine_info(),
        "service_env": env,
    }
    estimate = plan(scenarios)
    print(f"{len(scenarios)} scenarios: {', '.join(s.name for s in scenarios)}; planned ~{estimate:.0f} s", flush=True)
    if estimate > args.budget_s:
        print(f"warning: planned {estimate:.0f} s is over the {args.budget_s:.0f} s budget (see --time-scale)")
    started = time.monotonic()
    models = list(dict.fromkeys(s.model for s in scenarios))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as exits:
        workdir = args.workdir or Path(exits.enter_context(tempfile.TemporaryDirectory(prefix="natriton-bench-")))
        repository = args.model_repository
        if any(s.kind == "mesh_vs_ensemble" for s in scenarios):  # its ensemble is loaded next to the models
            repository = combined_repository(workdir / "repository", [args.model_repository, ENSEMBLE_MODELS])
        stack = MeshStack(workdir, models=models, model_repository=repository, service_env=env)
        print(f"starting the mesh (models {', '.join(models)}; logs in {workdir}) ...", flush=True)
        with stack:
            meta["stack_started_s"] = round(time.monotonic() - started, 1)
            results, failures = uvloop.run(run_all(stack, scenarios, args, workdir, meta))
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    meta["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    configs = {s.name: scenario_config(s) for s in scenarios}
    write_reports(results, configs, failures, meta, args)
    return 1 if failures else 0


def write_reports(
    results: dict[str, dict[str, Any]],
    configs: dict[str, dict[str, Any]],
    failures: dict[str, str],
    meta: dict[str, Any],
    args: argparse.Namespace,
) -> None:
    """summary.json, the plots and (unless --no-docs) docs/benchmarks.md; the targets on stdout."""
    summary = report.build_summary(results, meta)
    summary["scenarios"] = {name: failures.get(name, "ok") for name in configs}
    summary["sanity"] = meta.get("sanity")
    write_json(args.out_dir / "summary.json", summary)
    plots = make_plots(results, args.out_dir)
    if not args.no_docs:
        args.doc.parent.mkdir(parents=True, exist_ok=True)
        args.doc.write_text(report.markdown(summary, results, configs, plots, args.doc, failures))
    print_summary(summary, args)


def report_only(scenarios: list[Scenario], args: argparse.Namespace) -> int:
    """Rebuild the reports from ``<out-dir>/<scenario>.json`` of an earlier run."""
    results: dict[str, dict[str, Any]] = {}
    configs: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    meta: dict[str, Any] = {}
    for sc in scenarios:
        path = args.out_dir / f"{sc.name}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        results[sc.name], configs[sc.name] = data["result"], data["scenario"]
        if "error" in data["result"]:
            failures[sc.name] = data["result"]["error"]
        meta = {k: v for k, v in data.items() if k not in ("scenario", "result")} | {
            k: v for k, v in meta.items() if k == "date"
        }
    previous = args.out_dir / "summary.json"
    if previous.exists():
        old = json.loads(previous.read_text())
        meta.update({k: old[k] for k in ("date", "command", "elapsed_s", "machine") if k in old})
    if not results:
        print(f"no results in {args.out_dir}", file=sys.stderr)
        return 2
    write_reports(results, configs, failures, meta, args)
    return 0


def make_plots(results: dict[str, dict[str, Any]], out_dir: Path) -> dict[str, Path]:
    """Every plot that has data; returns name → path."""
    plots: dict[str, Path] = {}
    makers = {
        "throughput": (report.MESH_VS_TRITON, lambda r, p: report.plot_throughput(r, p), "mesh_vs_triton.png"),
        "noop": (report.NOOP_VS_RAW, lambda r, p: report.plot_noop(r, p), "noop_vs_raw_nats.png"),
        report.RAMP: (report.RAMP, lambda r, p: report.plot_ramp(r, p), "ramp_latency.png"),
        report.SPIKE: (
            report.SPIKE,
            lambda r, p: report.plot_timeline(r, p, "Spike: per-second latency and outcomes"),
            "spike_timeline.png",
        ),
        report.OVERLOAD: (
            report.OVERLOAD,
            lambda r, p: report.plot_timeline(r, p, "Overload (2x capacity): per-second latency and outcomes"),
            "overload_timeline.png",
        ),
        report.ENSEMBLE: (report.ENSEMBLE, lambda r, p: ensemble_report.plot(r, p), "mesh_vs_ensemble.png"),
        report.VIDEO: (report.VIDEO, lambda r, p: video_report.plot(r, p), "video.png"),
    }
    for key, (scenario, make, filename) in makers.items():
        result = results.get(scenario)
        if result and "error" not in result:
            path = out_dir / filename
            try:
                if make(result, path):
                    plots[key] = path
            except Exception as exc:  # a plot must not lose the results
                print(f"plot {filename} failed: {exc}", file=sys.stderr)
    return plots


def print_summary(summary: dict[str, Any], args: argparse.Namespace) -> None:
    """The targets table on stdout."""
    print(f"\nwrote {args.out_dir}/summary.json" + ("" if args.no_docs else f" and {args.doc}"))
    for t in summary["targets"]:
        measured = report.fmt(t["measured"], t["unit"])
        print(f"  {t['status']:>12}  {t['title']}: {measured} (target {t['target']}) {t['shortfall']}")
    print(f"done in {summary.get('elapsed_s')} s")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted: every process was stopped; results of finished scenarios are in loadtests/results")
