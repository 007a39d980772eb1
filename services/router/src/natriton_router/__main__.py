"""Entry point: ``python -m natriton_router`` (or the ``natriton-router`` script)."""

from __future__ import annotations

from natriton.service import run_service
from natriton_router import VERSION
from natriton_router.app import build_app
from natriton_router.settings import Settings

DESCRIPTION = "Natriton router: batching and Triton inference."


def main() -> None:
    """Run the router service until SIGTERM (``--help`` lists its options and NATRITON_* variables)."""
    run_service("router", VERSION, Settings, build_app, description=DESCRIPTION)


if __name__ == "__main__":
    main()
