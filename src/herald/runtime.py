"""Composition root: builds settings, engine and relays, and passes them down."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from sqlalchemy import Engine

from herald.config import Settings, ensure_secret_key
from herald.domain.relays import RelayConfig, parse_relay_list
from herald.store.engine import make_engine, migrate


@dataclass
class Runtime:
    """What every command and node needs, built once at the edge."""

    settings: Settings
    engine: Engine
    secret: str
    node_name: str

    @property
    def relays(self) -> list[RelayConfig]:
        """The configured relays (empty: the node runs the capture relay)."""
        return parse_relay_list(self.settings.relays) if self.settings.relays.strip() else []

    def close(self) -> None:
        self.engine.dispose()


def build_runtime(settings: Settings, *, migrate_schema: bool = False) -> Runtime:
    """Create the engine (and, if asked, bring the schema up to date).

    Side effect: creates the data directory and the secret key file on first use.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    secret = ensure_secret_key(settings)
    name = settings.node_name or f"{socket.gethostname()}-{os.getpid()}"
    engine = make_engine(
        settings.effective_database_url, pool_size=max(5, settings.concurrency), node_name=name
    )
    if migrate_schema:
        migrate(engine)
    return Runtime(settings=settings, engine=engine, secret=secret, node_name=name)
