"""``python -m loadtests.claim_check``: the whole measurement (see ``bench.py``)."""

from loadtests.claim_check.bench import run_cli

run_cli()
