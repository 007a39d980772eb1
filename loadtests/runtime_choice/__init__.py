"""Runtime-choice benchmark: raw nats-py vs a thin runtime of our own vs FastStream, four relays in a chain.

Run from the repository root: ``python -m loadtests.runtime_choice.bench --help``.
"""
