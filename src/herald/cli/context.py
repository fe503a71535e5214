"""Global CLI options, turned into settings and a runtime on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from herald.config import Settings, load_settings
from herald.runtime import Runtime, build_runtime


@dataclass
class CliContext:
    overrides: dict[str, Any] = field(default_factory=dict)
    _runtime: Runtime | None = None

    def settings(self) -> Settings:
        return load_settings(**self.overrides)

    def runtime(self, *, migrate_schema: bool = False) -> Runtime:
        if self._runtime is None:
            self._runtime = build_runtime(self.settings(), migrate_schema=migrate_schema)
        return self._runtime


def cli_context(ctx: typer.Context) -> CliContext:
    obj = ctx.find_root().obj
    assert isinstance(obj, CliContext)
    return obj


def data_dir_option() -> Any:
    return typer.Option(None, "--data-dir", help="Data directory [env HERALD_DATA_DIR].")


def overrides(database_url: str | None, data_dir: Path | None) -> dict[str, Any]:
    return {"database_url": database_url, "data_dir": data_dir}


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """Run a node's event loop: uvloop where installed (less CPU per message), else asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
