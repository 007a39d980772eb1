"""``natriton``: the command line of the mesh (typer + rich).

    natriton up [--detach]            run the local stack (nats-server, redis-server, tritonserver, services)
    natriton down                     stop a detached local stack
    natriton status                   services, models, NATS, Redis, Triton: is the mesh up?
    natriton models [NAME]            the model catalog
    natriton models load|unload NAME  model hot reload (Triton in explicit model-control mode)
    natriton infer FILE|TEXT -m M     one request, the answer shown nicely
    natriton routes ls|set|clear      routing policies (A/B, canary, shadow)
    natriton stream ls|add|rm         cameras (video sources), added and removed at run time
    natriton trace REQUEST_ID         a request's hops as a tree of spans
    natriton bench                    a closed-loop load test of a running mesh

Every command takes ``--json``, ``--help`` and (when it talks to NATS) ``--nats-url`` and ``--connect-timeout``.
The NATS URL comes from ``--nats-url``, else ``NATRITON_NATS_URL``, else the state file of a local stack started
with ``natriton up``, else ``nats://127.0.0.1:4222`` (``-v`` says which).
"""

from __future__ import annotations

import typer

from natriton_dev.cli import bench, deadletters, infer, local, models, routes, status, streams, trace
from natriton_dev.cli.common import EXIT_CODES_HELP

app = typer.Typer(
    name="natriton",
    help="Natriton: an inference mesh over NATS and Triton. The NATS URL comes from --nats-url, NATRITON_NATS_URL, "
    "a local stack started with natriton up, or nats://127.0.0.1:4222.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("up", epilog=EXIT_CODES_HELP)(local.up_command)
app.command("down", epilog=EXIT_CODES_HELP)(local.down_command)
app.command("status", epilog=EXIT_CODES_HELP)(status.status_command)
app.add_typer(models.app, name="models", epilog=EXIT_CODES_HELP)
app.command("infer", epilog=EXIT_CODES_HELP)(infer.infer_command)
app.add_typer(routes.app, name="routes", epilog=EXIT_CODES_HELP)
app.add_typer(streams.app, name="stream", epilog=EXIT_CODES_HELP)
app.add_typer(deadletters.app, name="deadletters", epilog=EXIT_CODES_HELP)
app.command("trace", epilog=EXIT_CODES_HELP)(trace.trace_command)
app.command("bench", epilog=EXIT_CODES_HELP)(bench.bench_command)


def main() -> None:
    """The ``natriton`` entry point."""
    app()


__all__ = ["app", "main"]
