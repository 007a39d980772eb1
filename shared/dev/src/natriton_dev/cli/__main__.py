"""``python -m natriton_dev.cli``: the same as the ``natriton`` command."""

from natriton_dev.cli import main

main()
