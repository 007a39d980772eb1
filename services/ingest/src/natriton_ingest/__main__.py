"""Entry point: ``python -m natriton_ingest`` (or the ``natriton-ingest`` script)."""

from __future__ import annotations

from natriton.service import run_service
from natriton_ingest import VERSION
from natriton_ingest.app import build_app
from natriton_ingest.settings import Settings

DESCRIPTION = "Natriton ingest: the front door (validation, deadlines, cache hits, replies)."


def main() -> None:
    """Run the ingest service until SIGTERM (``--help`` lists its options and NATRITON_* variables)."""
    run_service("ingest", VERSION, Settings, build_app, description=DESCRIPTION)


if __name__ == "__main__":
    main()
