"""The one process shape every service shares: arguments → settings → dependencies → run → drain on SIGTERM.

Every service's entry point is :func:`run_service`. Its command line is small: ``--help`` (usage and every
``NATRITON_*`` variable the service reads, with default and meaning), ``--version`` and ``--check-config``
(validate the environment, print the settings with secrets masked, exit 0 or 2). Settings come only from the
environment; a ``NATRITON_*`` variable that is no setting of the service is reported, and one that looks like a
misspelling of a setting stops the service (exit 2) rather than letting it run with the default.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
import textwrap
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn, Protocol, TypeVar

import uvloop

from natriton.logs import configure_logging
from natriton.metrics import MetricsServer, registry_for
from natriton.runtime import ServiceRuntime
from natriton.settings import (
    PREFIX,
    CommonSettings,
    SettingsError,
    describe,
    load_settings,
    settings_help,
    unknown_variables,
)

S = TypeVar("S", bound=CommonSettings)

EXIT_BAD_CONFIG = 2
"""Exit status for bad arguments, an invalid setting or a misspelled ``NATRITON_*`` variable."""
_HELP_WIDTH = 100


class App(Protocol):
    """What a service's app object offers the process runner."""

    async def start(self) -> None:
        """Build dependencies and add endpoints (the runtime is already connected)."""

    async def stop(self) -> None:
        """Release dependencies after the runtime has drained."""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``prog: error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_CONFIG, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def environment_help(settings_type: type[CommonSettings]) -> str:
    """The ``--help`` section listing every variable the service reads, with default and meaning."""
    lines = ["environment variables (settings are read only from the environment):"]
    for setting in settings_help(settings_type):
        lines.append(f"  {setting.variable}  ({setting.type}, default: {setting.default})")
        meaning = setting.doc.replace("``", "`") or "(no description)"
        lines.extend(textwrap.wrap(meaning, _HELP_WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6))
    return "\n".join(lines)


def build_parser(prog: str, version: str, settings_type: type[CommonSettings], description: str = "") -> _Parser:
    """The command line of a service (see the module docstring)."""
    epilog = (
        f"{environment_help(settings_type)}\n\n"
        "exit status: 0 stopped cleanly (SIGTERM/SIGINT: stop taking messages, finish accepted work), "
        f"1 failed at run time, {EXIT_BAD_CONFIG} bad arguments or settings."
    )
    parser = _Parser(
        prog=prog,
        description=description or f"{prog}: a Natriton service.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{prog} {version}")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="validate the NATRITON_* environment, print the settings (secrets masked) and exit: 0 valid, "
        f"{EXIT_BAD_CONFIG} invalid",
    )
    return parser


def load_checked_settings(prog: str, settings_type: type[S]) -> S:
    """Settings from the environment; warnings for unknown ``NATRITON_*`` variables, exit 2 on a typo or bad value."""
    typos = 0
    for unknown in unknown_variables(settings_type):
        if unknown.typo:
            typos += 1
            print(f"{prog}: error: {unknown.message(prog)} (refusing to run with the default)", file=sys.stderr)
        else:
            print(f"{prog}: warning: {unknown.message(prog)} (ignored)", file=sys.stderr)
    if typos:
        raise SystemExit(EXIT_BAD_CONFIG)
    try:
        return load_settings(settings_type)
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from exc


def run_service(
    name: str,
    version: str,
    settings_type: type[S],
    build_app: Callable[[ServiceRuntime, S], Awaitable[App]],
    *,
    description: str = "",
    argv: Sequence[str] | None = None,
) -> None:
    """Parse the command line, then run a service until SIGTERM/SIGINT; exit code 2 on bad arguments or settings."""
    prog = f"natriton-{name}"
    args = build_parser(prog, version, settings_type, description).parse_args(argv)
    settings = load_checked_settings(prog, settings_type)
    if args.check_config:
        print(f"# {prog} {version}: settings are valid")
        for field, value in describe(settings).items():
            print(f"{PREFIX}{field.upper()}={value}")
        return
    log = configure_logging(name, settings.log_level, settings.log_format, settings.instance_id)
    log.info("starting with settings %s", describe(settings))
    uvloop.run(_serve(name, version, settings, build_app, log))


async def _serve(
    name: str,
    version: str,
    settings: S,
    build_app: Callable[[ServiceRuntime, S], Awaitable[App]],
    log: logging.Logger,
) -> None:
    runtime = ServiceRuntime(name, version, settings)
    metrics: MetricsServer | None = None
    if settings.metrics_port:  # up first: /healthz answers and /readyz says why not while connecting and starting
        metrics = MetricsServer(
            registry_for(runtime),
            runtime.not_ready_reason,
            settings.metrics_host,
            settings.metrics_port,
            routes=runtime.http_routes,
        )
        await metrics.start()
        log.info("metrics, /healthz and /readyz on http://%s:%d", settings.metrics_host, metrics.port)
    try:
        await _run_app(name, runtime, settings, build_app, log)
    finally:
        if metrics is not None:
            await metrics.close()
    await asyncio.sleep(0)


async def _run_app(
    name: str,
    runtime: ServiceRuntime,
    settings: S,
    build_app: Callable[[ServiceRuntime, S], Awaitable[App]],
    log: logging.Logger,
) -> None:
    await runtime.connect()
    app = await build_app(runtime, settings)
    await app.start()
    runtime.app_started = True
    runtime.start_heartbeat()
    # Everything allocated so far lives for the whole process: keep it out of the collector's way, and collect
    # the young generation less often (fewer pauses on the request path; see docs/benchmarks.md).
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    log.info("%s ready", name)
    try:
        await runtime.wait_for_stop()
    finally:
        await runtime.drain()
        await app.stop()
