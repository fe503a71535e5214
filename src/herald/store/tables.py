"""Table definitions (SQLAlchemy Core). The same schema on SQLite and PostgreSQL.

Alembic migrations under ``store/migrations`` create these; this module is the
reference the store functions query against.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    true,
)

# BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


def _ts(name: str, *, nullable: bool = False) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=nullable)


subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    # Normalised (see domain.addresses): lower-cased, so uniqueness is case-insensitive.
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(255), nullable=False, default=""),
    Column("attribs", JSON, nullable=False, default=dict),
    Column("status", String(16), nullable=False, default="enabled"),
    _ts("created_at"),
    _ts("updated_at"),
)

lists = Table(
    "lists",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("optin", String(16), nullable=False, default="single"),
    Column("description", Text, nullable=False, default=""),
    # Anyone may subscribe through the public form /subscribe/{id}.
    Column("public", Boolean, nullable=False, default=False, server_default=false()),
    _ts("created_at"),
    _ts("updated_at"),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("list_id", Id, ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True),
    Column(
        "subscriber_id",
        Id,
        ForeignKey("subscribers.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("status", String(16), nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    Index(None, "subscriber_id"),
)

templates = Table(
    "templates",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("subject", Text, nullable=False, default=""),
    Column("html", Text, nullable=False, default=""),
    Column("text", Text, nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
)

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    Column("status", String(16), nullable=False, default="draft"),
    Column("from_addr", String(512), nullable=False),
    Column("subject", Text, nullable=False),
    Column("html", Text, nullable=False),
    Column("text", Text, nullable=True),
    Column("template_id", Id, ForeignKey("templates.id", ondelete="SET NULL"), nullable=True),
    Column("send_at", DateTime(timezone=True), nullable=True),
    # Messages per second for the whole campaign; NULL = as fast as relays allow.
    Column("rate_limit", Float, nullable=True),
    # Token bucket shared by every node: tokens left at ``rate_at``.
    Column("rate_tokens", Float, nullable=True),
    Column("rate_at", DateTime(timezone=True), nullable=True),
    # True once every recipient row has been materialised into deliveries;
    # until then ``materialise_cursor`` is the last subscriber id done.
    Column("materialised", Boolean, nullable=False, default=False),
    Column("materialise_cursor", Id, nullable=False, default=0),
    # Rewrite links and add an open pixel (domain.tracking).
    Column("track", Boolean, nullable=False, default=True, server_default=true()),
    # campaign | tx: a tx row is the hidden carrier of one transactional content
    # (services.transactional), running for ever, hidden from lists and reports.
    Column("kind", String(16), nullable=False, default="campaign", server_default="campaign"),
    _ts("created_at"),
    _ts("updated_at"),
    _ts("started_at", nullable=True),
    _ts("finished_at", nullable=True),
)

campaign_lists = Table(
    "campaign_lists",
    metadata,
    Column("campaign_id", Id, ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True),
    Column("list_id", Id, ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("campaign_id", Id, ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=True),
    Column("subscriber_id", Id, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(16), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    # Not before this time (backoff after a temporary failure).
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("lease_owner", String(255), nullable=True),
    Column("lease_expires", DateTime(timezone=True), nullable=True),
    # Bumped on every claim: an ack from an older claim of the same row is refused.
    Column("lease_epoch", Integer, nullable=False, default=0),
    Column("relay", String(255), nullable=True),
    Column("last_reply", Text, nullable=True),
    Column("message_id", String(255), nullable=True),
    # Transactional deliveries leave campaign_id NULL (so one address can get
    # many) and name their hidden tx campaign here; ``data`` is what its
    # template sees as ``data``.
    Column("tx_campaign_id", Id, nullable=True),
    Column("data", JSON, nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
    _ts("sent_at", nullable=True),
    UniqueConstraint("campaign_id", "subscriber_id"),
    Index(None, "status", "due_at"),
    Index(None, "campaign_id", "status"),
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("email", String(320), primary_key=True),
    Column("reason", String(32), nullable=False),
    Column("source", Text, nullable=False, default=""),
    _ts("created_at"),
)

nodes = Table(
    "nodes",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("roles", String(64), nullable=False),
    Column("version", String(32), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("state", String(16), nullable=False),  # active | draining | gone
    # Set by `herald nodes drain NAME`; the node sees it on its next heartbeat.
    Column("drain_requested", Boolean, nullable=False, default=False),
    _ts("started_at"),
    _ts("heartbeat_at"),
    # What only the node itself knows, sent with each heartbeat for the alert
    # rules: HTTP requests and 5xx answers since it started, tracking spool bytes.
    Column("stats", JSON, nullable=True),
)

relays = Table(
    "relays",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("host", String(255), nullable=False),
    Column("port", Integer, nullable=False),
    Column("tls", String(16), nullable=False),  # none | starttls | implicit
    Column("verify_tls", Boolean, nullable=False, default=True),
    Column("username", String(255), nullable=True),
    # The password sealed with a key derived from the Herald secret key
    # (domain.sealing); never stored in clear.
    Column("password_sealed", Text, nullable=True),
    Column("weight", Integer, nullable=False, default=1),
    Column("max_connections", Integer, nullable=False, default=50),  # cluster-wide
    # Messages per second through this relay; NULL = unlimited.
    Column("max_rate", Float, nullable=True),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("timeout", Float, nullable=False, default=60.0),
    # healthy | open | half_open | failed | disabled (the circuit breaker's view).
    Column("state", String(16), nullable=False, default="healthy"),
    Column("last_error", Text, nullable=True),
    Column("sent", BigInteger, nullable=False, default=0),
    Column("deferred", BigInteger, nullable=False, default=0),
    Column("failed", BigInteger, nullable=False, default=0),
    # Mean send time (ms) over the last report a node stored; when ``state`` last changed.
    Column("latency_ms", Float, nullable=True),
    _ts("state_at", nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
)

users = Table(
    "users",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),  # normalised
    Column("password_hash", Text, nullable=False),  # argon2id, with its parameters
    Column("role", String(16), nullable=False),  # admin | editor | viewer
    Column("disabled", Boolean, nullable=False, default=False),
    _ts("last_login_at", nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    # SHA-256 of the token: the token itself is shown once and never stored.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),  # its first characters, to recognise it
    _ts("last_used_at", nullable=True),
    _ts("revoked_at", nullable=True),
    _ts("created_at"),
)

# A POST with an Idempotency-Key: the first request's result, replayed to retries.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("principal", String(64), nullable=False),  # whose key: "token:3", "user:7"
    Column("key", String(255), nullable=False),
    Column("method", String(8), nullable=False),
    Column("path", Text, nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=True),  # NULL while the first request runs
    Column("response", Text, nullable=True),
    _ts("created_at"),
    UniqueConstraint("principal", "key"),
    Index(None, "created_at"),
)

# Failed logins and token checks per client address, to slow guessing down.
auth_failures = Table(
    "auth_failures",
    metadata,
    Column("address", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    _ts("first_at"),
    _ts("blocked_until", nullable=True),
)

# Opens and clicks, drained from each node's spool (services.tracking). No
# foreign keys: events outlive the deliveries of deleted subscribers.
tracking_events = Table(
    "tracking_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_id", String(32), nullable=False, unique=True),  # makes draining idempotent
    Column("kind", String(8), nullable=False),  # open | click
    Column("delivery_id", Id, nullable=False),
    Column("campaign_id", Id, nullable=False),
    Column("url", Text, nullable=True),
    Column("user_agent", String(255), nullable=True),
    # As HERALD_TRACKING_IP says: none, anonymised (IPv4 /24, IPv6 /48) or full.
    Column("ip", String(64), nullable=True),
    _ts("at"),
    Index(None, "campaign_id", "kind"),
)

# One row per cluster singleton (alert evaluation, probes, scheduled backups,
# maintenance): whoever holds an unexpired lease runs it (store.leases).
cluster_leases = Table(
    "cluster_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(255), nullable=True),  # node name
    _ts("expires_at", nullable=True),
    Column("epoch", Integer, nullable=False, default=0),  # bumped when the holder changes
)

# What each singleton job did and when: "backup older than N h" and the
# schedules read the last successful run from here.
job_runs = Table(
    "job_runs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("job", String(64), nullable=False),
    Column("node", String(255), nullable=False),
    _ts("started_at"),
    _ts("finished_at", nullable=True),
    Column("ok", Boolean, nullable=True),  # NULL while it runs
    Column("detail", Text, nullable=False, default=""),
    Index(None, "job", "started_at"),
)

# A CSV import started through the API: it runs in a thread of the node that
# received the upload, and any node reads its progress from here. A running
# import whose ``updated_at`` heartbeat is older than a minute lost its node.
imports = Table(
    "imports",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("status", String(16), nullable=False),  # queued | running | done | failed
    Column("list_ids", JSON, nullable=False),
    Column("filename", String(255), nullable=False, default=""),
    Column("node", String(255), nullable=False),
    Column("rows", BigInteger, nullable=False, default=0),
    Column("added", BigInteger, nullable=False, default=0),
    Column("updated", BigInteger, nullable=False, default=0),
    Column("skipped", BigInteger, nullable=False, default=0),
    Column("errors", BigInteger, nullable=False, default=0),
    Column("bytes_read", BigInteger, nullable=False, default=0),
    Column("bytes_total", BigInteger, nullable=True),
    Column("detail", Text, nullable=False, default=""),
    _ts("created_at"),
    _ts("started_at", nullable=True),
    _ts("finished_at", nullable=True),
    _ts("updated_at"),
)

# The first refused rows of an import (capped; see services.import_jobs).
import_errors = Table(
    "import_errors",
    metadata,
    Column("import_id", Id, ForeignKey("imports.id", ondelete="CASCADE"), primary_key=True),
    Column("line", BigInteger, primary_key=True),
    Column("email", Text, nullable=False),
    Column("error", Text, nullable=False),
)

# Spam complaints (feedback loops): one per delivery, whatever reports it twice.
complaints = Table(
    "complaints",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("delivery_id", Id, nullable=False, unique=True),
    Column("campaign_id", Id, nullable=True),
    Column("subscriber_id", Id, nullable=True),
    Column("email", String(320), nullable=False),
    _ts("at"),
    Index(None, "at"),
)

# Consent given through the public pages: who, which list, what (subscribe,
# confirm, preferences), from which form, from which address (as
# HERALD_TRACKING_IP says) and when.
consents = Table(
    "consents",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("subscriber_id", Id, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
    Column("list_id", Id, nullable=False),
    Column("action", String(16), nullable=False),
    Column("source", String(64), nullable=False),
    Column("ip", String(64), nullable=True),
    _ts("at"),
    Index(None, "subscriber_id", "list_id"),
)

# Each unsubscribe through a campaign's link, with the reason given on the
# page (empty for one-click). No foreign keys: the record outlives subscribers.
unsubscribes = Table(
    "unsubscribes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("subscriber_id", Id, nullable=False),
    Column("campaign_id", Id, nullable=True),
    Column("reason", String(32), nullable=False),
    Column("comment", Text, nullable=False),
    _ts("at"),
    Index(None, "campaign_id"),
)

# Fixed-window counters for the public pages: form posts per client address,
# confirmation emails per subscriber and list.
public_throttle = Table(
    "public_throttle",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("hits", Integer, nullable=False),
    _ts("window_start"),
)

# Built-in probes (ops.probes): one row per probe of an endpoint or a relay,
# kept 48 h; older ones are rolled up into probe_hours by services.probes.
probe_results = Table(
    "probe_results",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # endpoint | relay
    Column("target", String(255), nullable=False),  # a display name, never a host or secret
    _ts("at"),
    Column("ok", Boolean, nullable=False),
    Column("latency_ms", Float, nullable=True),  # NULL when nothing answered
    Column("error", String(255), nullable=True),
    Column("http_status", Integer, nullable=True),
    Index(None, "at"),
    Index(None, "kind", "target", "at"),
)

# Hourly roll-ups of probe_results, kept 35 days: counts and latency counts in
# the fixed buckets of domain.slo.BUCKETS_MS (a JSON list), so percentiles
# merge over any window.
probe_hours = Table(
    "probe_hours",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("target", String(255), primary_key=True),
    Column("hour", DateTime(timezone=True), primary_key=True),
    Column("probes", Integer, nullable=False),
    Column("failures", Integer, nullable=False),
    Column("buckets", JSON, nullable=False),
    Index(None, "hour"),
)

# Alert instances (herald.ops.alerts): at most one pending or firing row per
# (rule, key); resolved rows stay as history.
alerts = Table(
    "alerts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("rule", String(64), nullable=False),
    Column("key", String(255), nullable=False, default=""),  # relay, node, or ""
    Column("status", String(16), nullable=False),  # pending | firing | resolved
    Column("severity", String(16), nullable=False),
    Column("summary", Text, nullable=False),
    Column("details", JSON, nullable=False, default=dict),
    Column("node", String(255), nullable=False, default=""),  # the evaluating node
    _ts("started_at"),
    _ts("fired_at", nullable=True),
    _ts("notified_at", nullable=True),
    _ts("resolved_at", nullable=True),
    Index(None, "status"),
)

# Silences: a silenced alert notifies nothing until ``expires_at``.
alert_silences = Table(
    "alert_silences",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("rule", String(64), nullable=False),
    Column("key", String(255), nullable=True),  # NULL: every key of the rule
    _ts("expires_at"),
    Column("comment", Text, nullable=False, default=""),
    Column("created_by", String(320), nullable=False, default=""),
    _ts("created_at"),
)

# Tracking roll-up (services.maintenance): events older than
# HERALD_TRACKING_RAW_DAYS leave tracking_events as daily counts per campaign,
# kind and URL ("" for opens); reports add these to the raw rows' counts.
tracking_daily = Table(
    "tracking_daily",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("campaign_id", Id, nullable=False),
    Column("day", Date, nullable=False),  # UTC
    Column("kind", String(8), nullable=False),  # open | click
    Column("url", Text, nullable=False, server_default=""),
    Column("events", BigInteger, nullable=False),
    Index(None, "campaign_id", "kind", "day"),
)

# Which deliveries opened or clicked, for the unique counts of rolled-up
# events: written by the roll-up before it deletes the raw rows; reports
# count the union of these and the raw rows' deliveries.
tracking_uniques = Table(
    "tracking_uniques",
    metadata,
    Column("campaign_id", Id, primary_key=True),
    Column("kind", String(8), primary_key=True),
    Column("delivery_id", Id, primary_key=True),
)
