"""``herald nodes``."""

from __future__ import annotations

from typing import Annotated

import typer

from herald.cli.context import cli_context
from herald.cli.output import console, print_json, print_table
from herald.services import nodes as svc

app = typer.Typer(help="Cluster nodes.", no_args_is_help=True)


@app.command("ls")
def ls(ctx: typer.Context, json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every node that registered, and which are alive."""
    rows = svc.list_nodes(cli_context(ctx).runtime().engine)
    if json:
        print_json(rows)
        return
    print_table(
        "Nodes",
        ["name", "alive", "state", "roles", "version", "host", "pid", "heartbeat", "started"],
        [
            (
                r["name"],
                "yes" if r["alive"] else "no",
                r["state"],
                r["roles"],
                r["version"],
                r["host"],
                r["pid"],
                f"{r['heartbeat_age_s']}s ago",
                r["started_at"],
            )
            for r in rows
        ],
    )


@app.command("drain")
def drain(ctx: typer.Context, name: str) -> None:
    """Ask a node to drain: stop claiming, release what it holds, exit."""
    svc.request_drain(cli_context(ctx).runtime().engine, name)
    console.print(f"Drain requested for {name}; it acts on its next heartbeat (about a second).")
