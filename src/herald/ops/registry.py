"""The cluster duties every node offers to run (each runs on one node at a time)."""

from __future__ import annotations

from herald.cluster import Duty
from herald.runtime import Runtime


def cluster_duties(runtime: Runtime) -> list[Duty]:
    """Every singleton job, configured from ``runtime.settings``."""
    duties: list[Duty] = []
    return duties
