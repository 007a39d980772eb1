"""The one process shape every service shares: settings → dependencies → run → drain on SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import uvloop

from natriton.logs import configure_logging
from natriton.runtime import ServiceRuntime
from natriton.settings import CommonSettings, SettingsError, describe, load_settings

S = TypeVar("S", bound=CommonSettings)


class App(Protocol):
    """What a service's app object offers the process runner."""

    async def start(self) -> None:
        """Build dependencies and add endpoints (the runtime is already connected)."""

    async def stop(self) -> None:
        """Release dependencies after the runtime has drained."""


def run_service(
    name: str,
    version: str,
    settings_type: type[S],
    build_app: Callable[[ServiceRuntime, S], Awaitable[App]],
) -> None:
    """Run a service until SIGTERM/SIGINT; exit code 2 on bad settings."""
    try:
        settings = load_settings(settings_type)
    except SettingsError as exc:
        print(f"natriton-{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    log = configure_logging(name, settings.log_level)
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
    await runtime.connect()
    app = await build_app(runtime, settings)
    await app.start()
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
    await asyncio.sleep(0)
