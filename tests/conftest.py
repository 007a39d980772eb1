"""Marks every test under tests/integration as ``integration`` (deselect with ``-m 'not integration'``).

An integration test that fails is run once more (pytest-rerunfailures), two seconds later: these tests run a dozen
real server processes on a shared 2-core CI host, where a scheduling stall now and then outlasts a wait. A test
that fails twice fails the run; one that needed the second run shows as ``RERUN`` in the summary (``-ra``), so a
flaky test is seen and fixed rather than hidden. Unit, contract and fuzz tests are never run again.
``NATRITON_TEST_RERUNS=0`` turns the second run off (to chase a flaky test).
"""

from __future__ import annotations

import os

import pytest

INTEGRATION_RERUNS = int(os.environ.get("NATRITON_TEST_RERUNS", "1"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.flaky(reruns=INTEGRATION_RERUNS, reruns_delay=2))
