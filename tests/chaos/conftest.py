"""Fixtures for chaos tests: a real PostgreSQL primary/standby pair.

Outside CI, missing PostgreSQL server binaries skip these tests; with
``CI=true`` they fail instead, so CI can never pass by skipping them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.pgcluster import PgHarnessUnavailable, PgPair
from tests.ci import unavailable


@pytest.fixture
def pg_pair(tmp_path: Path) -> Iterator[PgPair]:
    """A started primary + synchronous streaming standby; stopped after the test."""
    try:
        pair = PgPair(tmp_path)
    except PgHarnessUnavailable as exc:
        unavailable(str(exc), in_ci=f"PostgreSQL server binaries are required in CI: {exc}")
    with pair:
        yield pair
