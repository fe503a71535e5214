"""Settings: environment (``HERALD_*``), an optional ``herald.toml`` and CLI flags.

Precedence, highest first: CLI flags (passed as init kwargs), environment,
``herald.toml`` (current directory, or ``HERALD_CONFIG``), defaults. There is no
module-level instance: ``load_settings`` builds one and the runtime passes it down.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from herald.domain.schedules import parse_interval, parse_schedule
from herald.domain.slo import endpoint_targets
from herald.domain.throttle import parse_domain_limits
from herald.errors import ConfigError, InvalidInput

DEFAULT_DATA_DIR = Path("herald-data")
SECRET_FILE = "secret.key"  # noqa: S105 - a file name, not a secret


def _readable(parse: Callable[[str], object], value: str) -> str:
    """``value`` if ``parse`` accepts it; its InvalidInput as the ValueError pydantic reports."""
    try:
        parse(value)
    except InvalidInput as exc:
        raise ValueError(exc.message) from exc
    return value


class Settings(BaseSettings):
    """Everything a Herald node can be told."""

    model_config = SettingsConfigDict(env_prefix="HERALD_", extra="ignore")

    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str = ""
    relays: str = ""
    base_url: str = "http://127.0.0.1:8025"
    secret_key: str = ""
    from_addr: str = Field(default="Herald <herald@localhost>", alias="HERALD_FROM")
    http_host: str = "127.0.0.1"
    http_port: int = 8025
    node_name: str = ""
    lease_ttl: float = Field(default=10.0, gt=0.5)
    batch_size: int = Field(default=500, ge=1, le=10_000)
    concurrency: int = Field(default=8, ge=1, le=256)
    max_attempts: int = Field(default=6, ge=1)
    retry_base_seconds: float = Field(default=30.0, ge=0)
    capture_port: int = Field(default=2525, ge=0, le=65535)
    heartbeat_interval: float = Field(default=1.0, gt=0)
    # Cluster singletons (alerts, probes, scheduled backups, maintenance): how
    # long a node holds a job's lease without renewing it; also how long the
    # job pauses when its node dies.
    duty_lease_ttl: float = Field(default=15.0, gt=0.1)
    # Built-in probes (docs/monitoring.md): every probe_interval s, each target
    # bounded by probe_timeout s; extra URLs as "url" or "name=url", comma-separated.
    probe_interval: float = Field(default=30.0, gt=0)
    probe_timeout: float = Field(default=5.0, gt=0)
    probe_urls: str = ""
    # The uptime objective of the endpoints, in percent: 99.9 leaves 0.1 % of probes to fail.
    slo: float = Field(default=99.9, gt=0, lt=100)
    status_page: Literal["public", "off"] = "public"
    # Relay circuit breakers: failures in a row that open one, the first
    # cool-down before a probe, and the first pause after a relay refused us.
    relay_failure_threshold: int = Field(default=5, ge=1)
    relay_cooldown: float = Field(default=2.0, gt=0)
    relay_failed_cooldown: float = Field(default=60.0, gt=0)
    # Cluster-wide limits per recipient domain: "gmail.com=50/s:10,outlook.com=20/s".
    domain_limits: str = ""
    # What tracking keeps of a reader's address: none, anonymised or full.
    tracking_ip: Literal["none", "anonymised", "full"] = "anonymised"
    # Scheduled backups (docs/backups.md): an interval ("6h") or a 5-field cron
    # expression in UTC ("0 3 * * *"); empty: none. Kept: the newest backup of
    # each of the last keep_daily days and keep_weekly ISO weeks.
    backup_schedule: str = ""
    backup_dir: Path | None = None  # default: <data dir>/backups
    backup_keep_daily: int = Field(default=7, ge=0)
    backup_keep_weekly: int = Field(default=4, ge=0)
    # An S3-compatible bucket instead of the directory: s3://bucket/prefix.
    backup_s3_url: str = ""
    backup_s3_endpoint: str = ""
    backup_s3_region: str = ""
    backup_s3_access_key_id: str = ""
    backup_s3_secret_access_key: str = ""
    # Maintenance (docs/maintenance.md): tracking events older than
    # tracking_raw_days become daily counts; how often each job runs.
    tracking_raw_days: float = Field(default=30.0, gt=0)
    maintenance_tracking_interval: str = "1d"
    maintenance_purge_interval: str = "1h"
    maintenance_database_interval: str = "1d"
    # Alerts (docs/operations.md): evaluated once per cluster every
    # alert_interval s; a firing alert is repeated every alert_repeat s.
    alert_interval: float = Field(default=15.0, gt=0)
    alert_repeat: float = Field(default=3600.0, gt=0)
    alert_webhook: str = ""
    alert_webhook_format: Literal["json", "slack"] = "json"
    alert_email: str = ""
    # Rule thresholds: durations in seconds, rates in percent.
    alert_node_lost_after: float = Field(default=30.0, gt=0)
    alert_relay_down_after: float = Field(default=300.0, ge=0)
    alert_all_relays_down_after: float = Field(default=60.0, ge=0)
    alert_outbox_stalled_after: float = Field(default=600.0, gt=0)
    alert_window: float = Field(default=300.0, gt=0)  # send errors, HTTP 5xx, spool growth
    alert_send_error_percent: float = Field(default=5.0, ge=0, le=100)
    alert_http_error_percent: float = Field(default=1.0, ge=0, le=100)
    alert_complaint_percent: float = Field(default=0.3, ge=0, le=100)
    alert_complaint_window: float = Field(default=86400.0, gt=0)
    alert_failover_hold: float = Field(default=600.0, gt=0)
    alert_backup_max_age: float = Field(default=26 * 3600.0, gt=0)
    # Largest CSV upload POST /api/v1/imports accepts (bytes); larger gets 413.
    import_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1)

    @field_validator("domain_limits")
    @classmethod
    def _check_domain_limits(cls, value: str) -> str:
        return _readable(parse_domain_limits, value)

    @field_validator("probe_urls")
    @classmethod
    def _check_probe_urls(cls, value: str) -> str:
        return _readable(lambda v: endpoint_targets("http://127.0.0.1", v), value)

    @field_validator("backup_schedule")
    @classmethod
    def _check_backup_schedule(cls, value: str) -> str:
        return _readable(parse_schedule, value) if value.strip() else value

    @field_validator(
        "maintenance_tracking_interval",
        "maintenance_purge_interval",
        "maintenance_database_interval",
    )
    @classmethod
    def _check_interval(cls, value: str) -> str:
        return _readable(parse_interval, value)

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("HERALD_CONFIG", "herald.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_path),
        )

    @property
    def effective_database_url(self) -> str:
        """The database URL, defaulting to SQLite inside the data directory."""
        return self.database_url or f"sqlite:///{self.data_dir / 'herald.db'}"

    @property
    def capture_dir(self) -> Path:
        return self.data_dir / "captured"


def load_settings(**overrides: Any) -> Settings:
    """Build settings; ``overrides`` (CLI flags) win. Unset overrides are ignored.

    Raises ConfigError with a readable message for invalid values.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    if "from_addr" in given:
        given["HERALD_FROM"] = given.pop("from_addr")
    try:
        return Settings(**given)
    except ValueError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc


def ensure_secret_key(settings: Settings) -> str:
    """Return the secret key, generating and storing one in the data dir if unset.

    Side effect: creates ``<data_dir>/secret.key`` (mode 0600) on first use.
    """
    if settings.secret_key:
        return settings.secret_key
    path = settings.data_dir / SECRET_FILE
    if path.exists():
        key = path.read_text().strip()
    else:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
    settings.secret_key = key
    return key
