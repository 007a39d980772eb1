"""Entry point: ``python -m natriton_router`` (or the ``natriton-router`` script)."""

from __future__ import annotations

from natriton.service import run_service
from natriton_router import VERSION
from natriton_router.app import build_app
from natriton_router.settings import Settings


def main() -> None:
    """Run the router service until SIGTERM."""
    run_service("router", VERSION, Settings, build_app)


if __name__ == "__main__":
    main()
