"""Command line: Typer app. Thin: parse, call a service, print."""

from __future__ import annotations

from herald.cli.main import main

__all__ = ["main"]
