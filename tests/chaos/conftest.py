"""Fixtures for chaos tests: a real PostgreSQL primary/standby pair.

Outside CI, missing PostgreSQL server binaries skip these tests; with
``CI=true`` they fail instead, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.pgcluster import PgHarnessUnavailable, PgPair

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture
def pg_pair(tmp_path: Path) -> Iterator[PgPair]:
    """A started primary + synchronous streaming standby; stopped after the test."""
    try:
        pair = PgPair(tmp_path)
    except PgHarnessUnavailable as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL server binaries are required in CI: {exc}")
        pytest.skip(str(exc))
    with pair:
        yield pair
