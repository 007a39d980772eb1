"""Hypothesis profiles for the fuzz tests: a bounded run in ``make test``, a long one in ``make fuzz``.

``NATRITON_FUZZ=long`` selects the long profile (``NATRITON_FUZZ_EXAMPLES`` sets its examples per test, 5,000 by
default), which keeps what it finds in ``.natriton/hypothesis`` (ignored by git) and replays it on the next long
run; the default profile keeps nothing, so ``make test`` writes no files.
"""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

SLOW_INPUT_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
"""Images are large and decoding them is slow next to hypothesis' own work: not a problem of the test."""

settings.register_profile(
    "natriton",
    max_examples=250,
    deadline=timedelta(seconds=1),
    database=None,
    print_blob=True,
)
settings.register_profile(
    "natriton-long",
    max_examples=int(os.environ.get("NATRITON_FUZZ_EXAMPLES", "5000")),
    deadline=timedelta(seconds=1),
    database=DirectoryBasedExampleDatabase(".natriton/hypothesis"),
    print_blob=True,
)
settings.load_profile("natriton-long" if os.environ.get("NATRITON_FUZZ") == "long" else "natriton")
