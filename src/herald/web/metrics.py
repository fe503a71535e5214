"""``/metrics``: this node's Prometheus exposition.

Each app gets a registry of its own (`install_metrics`), never the
process-wide default, so several apps in one process (tests, or an embedding
program) never collide. It holds:

- the sending side's counters (`herald.delivery.metrics.SendMetrics`, shared
  with this node's worker through `NodeState`);
- HTTP requests by method, route template and status, with a latency
  histogram, counted by a small ASGI middleware. The label is the route's
  *template* (``/u/{token}``), never the raw path: tokens and ids must not
  become label values, and unmatched paths all count as ``unmatched``;
- gauges read from the database when scraped (`DatabaseCollector`): outbox
  depth and oldest pending age per running campaign, node heartbeats,
  campaigns by status, relay reports, the database round trip. A database
  that does not answer gives ``herald_database_up 0``, not a failed scrape;
- ``herald_build_info`` and ``herald_node_draining``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from herald import __version__
from herald.delivery.metrics import relay_state_family
from herald.domain.states import CampaignStatus
from herald.errors import DatabaseUnavailable
from herald.runtime import Runtime
from herald.services.monitoring import Snapshot, read_snapshot
from herald.services.probes import metric_readings

if TYPE_CHECKING:
    from herald.node import NodeState

log = logging.getLogger(__name__)

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
NODE_ROLES = ("api", "worker")


def install_metrics(app: FastAPI, runtime: Runtime, state: NodeState) -> CollectorRegistry:
    """Give ``app`` a registry, the HTTP middleware and the ``/metrics`` route."""
    registry = CollectorRegistry()
    registry.register(state.send_metrics)
    registry.register(DatabaseCollector(runtime.engine))
    registry.register(ProbeCollector(runtime.engine))
    registry.register(NodeCollector(runtime.node_name, state))
    requests = Counter(
        "herald_http_requests",
        "HTTP requests answered, by method, route template and status code.",
        ["method", "route", "status"],
        registry=registry,
    )
    seconds = Histogram(
        "herald_http_request_duration_seconds",
        "Time to answer an HTTP request, by method and route template.",
        ["method", "route"],
        buckets=HTTP_BUCKETS,
        registry=registry,
    )
    app.add_middleware(HttpMetricsMiddleware, requests=requests, seconds=seconds)
    state.http_requests = requests  # the node reports its totals with its heartbeat

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus text format; the database part is read now, in a thread."""
        body = await asyncio.to_thread(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return registry


class HttpMetricsMiddleware:
    """Pure ASGI middleware counting every HTTP request once it is answered."""

    def __init__(self, app: ASGIApp, *, requests: Counter, seconds: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root = str(scope.get("root_path", ""))  # a mounted app (the API) extends it
        status = 500  # what the client gets if the app raises before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = route_template(scope, root)
            self.requests.labels(method, route, str(status)).inc()
            self.seconds.labels(method, route).observe(time.perf_counter() - started)


def route_template(scope: Scope, root: str = "") -> str:
    """The matched route's path template (``/u/{token}``), or ``unmatched``.

    The router stores the matched route in the scope, which it shares with
    the middleware, so this is read after the app has run. A route of a
    mounted app (the API under ``/api/v1``) knows only its own part: the
    mount's prefix is what it added to the scope's ``root_path`` since ``root``.
    """
    route: Any = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not template:
        return UNMATCHED
    mounted = str(scope.get("root_path", ""))
    prefix = mounted[len(root) :] if mounted.startswith(root) else ""
    return prefix + str(template)


class NodeCollector(Collector):
    """``herald_build_info`` and ``herald_node_draining``, read from the node's state."""

    def __init__(self, node_name: str, state: NodeState) -> None:
        self.node_name = node_name
        self.state = state

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "herald_build_info", "Herald's version on this node (always 1).", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            "herald_node_draining",
            "1 while this node drains (no new claims, /readyz 503), else 0.",
            value=1 if self.state.draining else 0,
        )
        if self.state.spool is not None:
            yield GaugeMetricFamily(
                "herald_tracking_spool_bytes",
                "Tracking events in this node's spool, not yet in the database (bytes).",
                value=self.state.spool.backlog(),
            )


class DatabaseCollector(Collector):
    """Gauges read from the database on every scrape, in one short read-only transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        try:
            snap = read_snapshot(self.engine)
        except (SQLAlchemyError, DatabaseUnavailable) as exc:
            log.warning("metrics: database unavailable (%s)", type(exc).__name__)
            snap = None
        yield GaugeMetricFamily(
            "herald_database_up",
            "1 when this node's database answered the scrape's queries, else 0.",
            value=0 if snap is None else 1,
        )
        if snap is not None:
            yield from database_families(snap)


def database_families(snap: Snapshot) -> Iterator[Metric]:
    """The metric families of one database snapshot."""
    yield GaugeMetricFamily(
        "herald_database_roundtrip_seconds",
        "Time of one SELECT 1 from this node.",
        value=snap.round_trip,
    )
    campaigns = GaugeMetricFamily("herald_campaigns", "Campaigns by status.", labels=["status"])
    for status in CampaignStatus:
        campaigns.add_metric([status.value], snap.campaigns.get(status.value, 0))
    yield campaigns
    yield from _outbox_families(snap)
    yield from _node_families(snap)
    yield from _relay_families(snap)


def _outbox_families(snap: Snapshot) -> Iterator[Metric]:
    depth = GaugeMetricFamily(
        "herald_outbox_depth",
        "Open deliveries of each running campaign: pending (waiting) and sending (claimed).",
        labels=["campaign", "status"],
    )
    age = GaugeMetricFamily(
        "herald_outbox_oldest_pending_age_seconds",
        "How long the oldest pending delivery already due has waited, per running campaign "
        "(0 when none is waiting).",
        labels=["campaign"],
    )
    for c in snap.outbox:
        depth.add_metric([str(c.campaign_id), "pending"], c.pending)
        depth.add_metric([str(c.campaign_id), "sending"], c.sending)
        age.add_metric([str(c.campaign_id)], c.oldest_pending_age)
    yield depth
    yield age


def _node_families(snap: Snapshot) -> Iterator[Metric]:
    beats = GaugeMetricFamily(
        "herald_node_heartbeat_age_seconds",
        "Seconds since each node not marked gone last heartbeated.",
        labels=["node", "roles", "state"],
    )
    for node in snap.nodes:
        beats.add_metric([node.name, ",".join(node.roles), node.state], node.heartbeat_age)
    yield beats
    alive = GaugeMetricFamily(
        "herald_nodes_alive",
        "Nodes with a recent heartbeat that are not draining, by role.",
        labels=["role"],
    )
    for role in NODE_ROLES:
        alive.add_metric([role], snap.live(role))
    yield alive


def _relay_families(snap: Snapshot) -> Iterator[Metric]:
    messages = CounterMetricFamily(
        "herald_relay_messages",
        "Messages per stored relay and result (sent, deferred, failed), summed over "
        "every node's reports: the same cluster-wide figure on every node.",
        labels=["relay", "result"],
    )
    latency = GaugeMetricFamily(
        "herald_relay_latency_seconds",
        "Mean send time of each relay in the last report a node stored.",
        labels=["relay"],
    )
    for r in snap.relays:
        messages.add_metric([r.name, "sent"], r.sent)
        messages.add_metric([r.name, "deferred"], r.deferred)
        messages.add_metric([r.name, "failed"], r.failed)
        if r.latency_ms is not None:
            latency.add_metric([r.name], r.latency_ms / 1000)
    yield messages
    yield latency
    yield relay_state_family(
        "herald_relay_stored_state",
        "Each stored relay's state as last reported by a node: 0 healthy, 1 half_open, "
        "2 open, 3 failed, 4 disabled.",
        [(r.name, r.state) for r in snap.relays],
    )


class ProbeCollector(Collector):
    """The built-in probes' newest result per target, and the last successful
    scheduled backup, read from the database on every scrape. Nothing is
    exported while the database does not answer (``herald_database_up`` says so).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        try:
            readings = metric_readings(self.engine)
        except (SQLAlchemyError, DatabaseUnavailable):
            return
        up = GaugeMetricFamily(
            "herald_probe_up",
            "1 when the newest built-in probe of a target succeeded, else 0.",
            labels=["target", "kind"],
        )
        latency = GaugeMetricFamily(
            "herald_probe_latency_seconds",
            "Response time of the newest built-in probe of a target that answered.",
            labels=["target", "kind"],
        )
        for row in readings.latest:
            labels = [str(row["target"]), str(row["kind"])]
            up.add_metric(labels, 1 if row["ok"] else 0)
            if row["latency_ms"] is not None:
                latency.add_metric(labels, float(row["latency_ms"]) / 1000)
        yield up
        yield latency
        if readings.last_backup is not None:
            yield GaugeMetricFamily(
                "herald_backup_last_success_timestamp_seconds",
                "When the latest successful scheduled backup finished (Unix time).",
                value=readings.last_backup.timestamp(),
            )
