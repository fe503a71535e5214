"""What a node tells the cluster about itself with each heartbeat.

The database cannot know how many HTTP requests a node answered or how much
tracking it still holds in its spool; the alert rules (``HeraldHttp5xxRate``,
``HeraldSpoolBacklogGrowing``) read these figures from the ``nodes`` row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from herald.node import NodeState

# /readyz answers 503 on purpose while a node drains: not an error.
NOT_COUNTED = frozenset({"/readyz"})


def node_stats(state: NodeState) -> dict[str, Any]:
    """Totals since this process started: ``http_requests``, ``http_5xx``; and
    ``spool_bytes`` now. A restart starts the totals again from zero."""
    requests = errors = 0
    if state.http_requests is not None:
        for metric in state.http_requests.collect():
            for sample in metric.samples:
                if not sample.name.endswith("_total"):
                    continue
                if sample.labels.get("route") in NOT_COUNTED:
                    continue
                requests += int(sample.value)
                if sample.labels.get("status", "").startswith("5"):
                    errors += int(sample.value)
    spool = state.spool.backlog() if state.spool is not None else 0
    return {"http_requests": requests, "http_5xx": errors, "spool_bytes": spool}
