"""Entry point: ``python -m natriton_postprocess`` (or the ``natriton-postprocess`` script)."""

from __future__ import annotations

from natriton.service import run_service
from natriton_postprocess import VERSION
from natriton_postprocess.app import build_app
from natriton_postprocess.settings import Settings


def main() -> None:
    """Run the postprocess service until SIGTERM."""
    run_service("postprocess", VERSION, Settings, build_app)


if __name__ == "__main__":
    main()
