"""Entry point: ``python -m natriton_preprocess`` (or the ``natriton-preprocess`` script)."""

from __future__ import annotations

from natriton.service import run_service
from natriton_preprocess import VERSION
from natriton_preprocess.app import build_app
from natriton_preprocess.settings import Settings

DESCRIPTION = "Natriton preprocess: images to model tensors."


def main() -> None:
    """Run the preprocess service until SIGTERM (``--help`` lists its options and NATRITON_* variables)."""
    run_service("preprocess", VERSION, Settings, build_app, description=DESCRIPTION)


if __name__ == "__main__":
    main()
