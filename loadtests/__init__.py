"""Natriton benchmarks and load tests (``python -m loadtests.bench``)."""
