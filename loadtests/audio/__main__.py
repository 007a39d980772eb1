"""``python -m loadtests.audio``: the whole measurement (see ``bench.py``)."""

from loadtests.audio.bench import run_cli

run_cli()
