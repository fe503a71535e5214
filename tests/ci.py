"""What a test does when something it needs is missing: skip on a developer's
machine, fail in CI, where nothing that matters may be skipped."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(reason: str, *, in_ci: str | None = None) -> NoReturn:
    """Skip the test for ``reason``; in CI fail it instead, with ``in_ci`` if given."""
    if IN_CI:
        pytest.fail(in_ci or reason)
    pytest.skip(reason)
