"""The cluster duties every node offers to run (each runs on one node at a time)."""

from __future__ import annotations

from herald.cluster import Duty
from herald.ops.alerts import alerts_duty
from herald.ops.backups import backup_duty
from herald.ops.maintenance import maintenance_duties
from herald.ops.probes import probe_duty
from herald.runtime import Runtime


def cluster_duties(runtime: Runtime) -> list[Duty]:
    """Every singleton job, configured from ``runtime.settings``."""
    duties: list[Duty] = [alerts_duty(runtime)]
    duties.append(probe_duty(runtime))
    backup = backup_duty(runtime)
    if backup is not None:
        duties.append(backup)
    duties.extend(maintenance_duties(runtime))
    return duties
