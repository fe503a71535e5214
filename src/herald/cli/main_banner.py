"""The banner a node prints when it is up: where to look."""

from __future__ import annotations

from typing import TYPE_CHECKING

from herald import __version__
from herald.cli.output import console
from herald.config import Settings

if TYPE_CHECKING:
    from herald.node import NodeState


def print_banner(settings: Settings, state: NodeState, database: str, *, http: bool = True) -> None:
    node = state.worker.opts.node_name if state.worker else "http only"
    lines = [f"[bold green]Herald {__version__} is running[/] (node {node})"]
    if http:
        url = f"http://{settings.http_host}:{settings.http_port}"
        lines.append(f"  Health:    {url}/healthz   Readiness: {url}/readyz")
    lines.append(f"  Database:  {database}")
    if state.capture:
        lines.append(
            "[bold yellow]  No relay configured (HERALD_RELAYS): mail is NOT delivered.[/]\n"
            f"[bold yellow]  It is captured by an embedded SMTP server on "
            f"{state.capture[0]}:{state.capture[1]}\n"
            f"  and stored as .eml files under {settings.capture_dir}/[/]"
        )
    elif state.relays:
        lines.append(
            "  Relays:    " + ", ".join(f"{r.name} ({r.host}:{r.port})" for r in state.relays)
        )
    lines.append("  Stop with Ctrl-C (drains: finishes or releases what it holds).")
    console.print("\n".join(lines))
