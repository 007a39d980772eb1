"""Entry point: ``python -m natriton_postprocess`` (or the ``natriton-postprocess`` script)."""

from __future__ import annotations

from natriton.service import run_service
from natriton_postprocess import VERSION
from natriton_postprocess.app import build_app
from natriton_postprocess.settings import Settings

DESCRIPTION = "Natriton postprocess: raw outputs to answers, cache writes, replies."


def main() -> None:
    """Run the postprocess service until SIGTERM (``--help`` lists its options and NATRITON_* variables)."""
    run_service("postprocess", VERSION, Settings, build_app, description=DESCRIPTION)


if __name__ == "__main__":
    main()
